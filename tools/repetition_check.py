"""How often a small model loops at the chat page's sampling settings, with and without a
repetition penalty: the measurement behind the page's default.

    python tools/repetition_check.py [MODEL ...] [--penalties 1.0 1.1 1.2] [--seeds 2] [--json]

Each MODEL answers the chat questions of `labkit.serve.client` (temperature 0.7, top-p 0.9,
the page's defaults, 256 tokens at most, `--seeds` samples per question) once per penalty. An
answer *loops* when fewer than half of its 4-grams are distinct (a phrase or a word repeated
to the end); the table gives the share of answers that loop, the mean distinct-4-gram ratio,
and the share cut off at the token limit.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

from labkit.engine import LLM
from labkit.models.sampling import SamplingParams
from labkit.serve.client import QUESTIONS


def distinct4(ids: list[int]) -> float:
    grams = [tuple(ids[i:i + 4]) for i in range(len(ids) - 3)]
    return len(set(grams)) / len(grams) if grams else 1.0


def check(model: str, penalties: list[float], seeds: int, max_tokens: int = 256) -> list[dict]:
    llm = LLM(model, max_batch_size=16)
    prompts = [llm.tokenizer.encode_chat([{"role": "user", "content": q}]) for q in QUESTIONS for _ in range(seeds)]
    rows = []
    for penalty in penalties:
        params = [SamplingParams(temperature=0.7, top_p=0.9, max_tokens=max_tokens, repetition_penalty=penalty, seed=i)
                  for i in range(len(prompts))]
        outs = llm.generate(prompts, params)
        d4 = [distinct4(o.token_ids) for o in outs]
        rows.append({"model": model, "penalty": penalty, "answers": len(outs),
                     "looping": sum(d < 0.5 for d in d4) / len(outs), "distinct4": statistics.mean(d4),
                     "at_limit": sum(o.finish_reason == "length" for o in outs) / len(outs),
                     "mean_tokens": statistics.mean(len(o.token_ids) for o in outs),
                     "example_loop": next((o.text[:200] for o, d in zip(outs, d4) if d < 0.5), None)})
        print(f"{model} penalty {penalty}: {rows[-1]['looping']:.0%} loop, distinct-4 {rows[-1]['distinct4']:.2f}, "
              f"{rows[-1]['at_limit']:.0%} at the limit", file=sys.stderr, flush=True)
    llm.close()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=["embedded"])
    p.add_argument("--penalties", nargs="+", type=float, default=[1.0, 1.1, 1.2])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rows = [row for m in args.models for row in check(m, args.penalties, args.seeds)]
    if args.json:
        print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
