"""`labkit chat [MODEL] [--cli]`: talk to a model.

`--cli` is a terminal chat: type a message, watch the answer stream in. Commands: /reset
clears the conversation, /system TEXT sets the system prompt, /exit (or Ctrl-D) leaves.
"""
from __future__ import annotations

import argparse
import sys

from labkit.clitools import add_model_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--cli", action="store_true", help="chat in the terminal instead of the web page")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="cpu")


def run(args) -> int:
    return terminal_chat(args)


def terminal_chat(args) -> int:
    from labkit.errors import UserError
    from labkit.loading import load_model
    from labkit.models.generate import stream
    from labkit.models.sampling import SamplingParams

    try:
        params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed)
    except ValueError as e:
        raise UserError(str(e)) from e
    model, tokenizer = load_model(args.model, device=args.device)
    system = args.system
    history: list[dict] = []
    print(f"labkit chat · {args.model} · /reset /system TEXT /exit", flush=True)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return 0
        if line == "/reset":
            history = []
            print("(conversation cleared)")
            continue
        if line.startswith("/system"):
            system = line[len("/system"):].strip() or None
            history = []
            print("(system prompt set; conversation cleared)")
            continue
        history.append({"role": "user", "content": line})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        print("assistant> ", end="", flush=True)
        reply = []
        for piece in stream(model, tokenizer, tokenizer.encode_chat(messages), params):
            reply.append(piece)
            print(piece, end="", flush=True)
        print(flush=True)
        history.append({"role": "assistant", "content": "".join(reply)})
