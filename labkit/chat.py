"""`labkit chat [MODEL] [--cli]`: talk to a model.

Without `--cli` it serves the Gradio chat page (`labkit.serve.gradio_app`) on 127.0.0.1 and
opens it in a browser when there is a desktop to open it on. `--cli` is a terminal chat:
type a message, watch the answer stream in; /reset clears the conversation, /system TEXT
sets the system prompt, /exit (or Ctrl-D) leaves, Ctrl-C stops an answer. Both run on the
engine (`labkit.engine.LLM`), the same generation path as the API server.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading

from labkit.clitools import add_model_argument
from labkit.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from labkit.serve.engine_args import add_engine_arguments

    add_model_argument(p)
    p.add_argument("--cli", action="store_true", help="chat in the terminal instead of the web page")
    p.add_argument("--server-name", default="127.0.0.1", help="address of the page (default: this machine only)")
    p.add_argument("--server-port", type=int, default=6006)
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    p.add_argument("--models-dir", default=None, metavar="DIR",
                   help="offer every labkit checkpoint folder found in DIR in the page's model selector")
    g = p.add_argument_group("terminal chat (--cli)")
    g.add_argument("--system", default=None, help="system prompt")
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--top-p", type=float, default=0.9)
    g.add_argument("--max-tokens", type=int, default=256)
    g.add_argument("--seed", type=int, default=None)
    add_engine_arguments(p)


def run(args) -> int:
    from labkit.serve.engine_args import build_engine, engine_kwargs

    kwargs = engine_kwargs(args)
    if args.cli:
        params = _params(args)   # check the options before the model loads
        return terminal_chat(build_engine(args.model, **kwargs), params, args.system)
    from labkit.serve import variants
    from labkit.serve.api_server import bind
    from labkit.serve.gradio_app import build_demo, launch

    bind(args.server_name, args.server_port).close()   # a bad or taken port fails now, not after the model loads
    if args.models_dir:
        variants.find_checkpoints(args.models_dir)       # and so does a missing --models-dir
    print(f"labkit chat: loading {args.model} ...", file=sys.stderr, flush=True)
    demo = build_demo(args.model, llm=build_engine(args.model, **kwargs), engine_kwargs=kwargs,
                      models_dir=args.models_dir, measure=True)
    launch(demo, args.server_name, args.server_port, inbrowser=not args.no_browser and _has_desktop(), block=False)
    try:
        while True:   # the live engine's steps run in this, the main thread (`LLM.run_steps` says why)
            llm = demo.engines.llm
            llm.run_steps(until=lambda: demo.engines.llm is not llm)
    finally:
        demo.close()


def _params(args):
    from labkit.models.sampling import SamplingParams

    try:
        return SamplingParams(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed)
    except ValueError as e:
        raise UserError(str(e)) from e


def _has_desktop() -> bool:
    """Opening a browser without a desktop would start a text browser in this terminal."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def terminal_chat(llm, params, system: str | None = None) -> int:
    """The read-answer loop. The engine's streams are asynchronous: each answer streams on one
    event loop, kept in a background thread for the whole session, while this thread runs the
    engine's steps (`LLM.run_steps` says why) and, between turns, `input()`."""
    from labkit.serve.conversation import stream_reply

    loop = asyncio.new_event_loop()   # answers stream on it in a background thread; the steps run here
    threading.Thread(target=loop.run_forever, name="labkit-chat-loop", daemon=True).start()
    history: list[dict] = []
    print("labkit chat · /reset /system TEXT /exit · Ctrl-C stops an answer", flush=True)

    async def answer(into: list[str]) -> None:
        async for piece, _ in stream_reply(llm, history, system, params):
            into.append(piece)
            print(piece, end="", flush=True)

    try:
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
            if line == "/reset" or line.startswith("/system"):
                if line.startswith("/system"):
                    system = line[len("/system"):].strip() or None
                history = []
                print("(conversation cleared)")
                continue
            history.append({"role": "user", "content": line})
            print("assistant> ", end="", flush=True)
            pieces: list[str] = []
            reply = asyncio.run_coroutine_threadsafe(answer(pieces), loop)
            try:
                llm.run_steps(until=reply.done)
                reply.result()
            except KeyboardInterrupt:   # stop this answer (the stream aborts its sequence), keep the chat
                reply.cancel()
                print(" [stopped]", end="")
            except UserError as e:
                history.pop()
                print(f"\n(error: {e})", flush=True)
                continue
            print(flush=True)
            history.append({"role": "assistant", "content": "".join(pieces)})
    finally:
        loop.call_soon_threadsafe(loop.stop)
