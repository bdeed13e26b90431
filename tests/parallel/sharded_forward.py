"""Run by test_tp_model.py: MODEL split over WORLD gloo processes with the engine's own
`shard`/`gather_logits`, no engine around it, in float32 as loaded (a quantized checkpoint's
layers compute densely). Prints one JSON object: the largest logit difference against the
whole model, the largest logit, and both greedy continuations."""
from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

PROMPT = "The history of the printing press begins in 1440,"


def rank_main(rank: int, world: int, port: int, folder: str) -> None:
    from labkit.engine.parallel.shard import Comm, gather_logits, shard
    from labkit.loading import load_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    whole, tok = load_model(folder)
    part, _ = load_model(folder)
    comm = Comm(rank, world)
    shard(part, comm)
    gather_logits(part, part.config.vocab_size, comm)
    ids = torch.tensor([tok.encode(PROMPT)])
    with torch.no_grad():
        a, b = whole(ids), part(ids)
        tokens = greedy(part, ids)   # every rank steps together
    if rank == 0:
        print(json.dumps({"diff": (a - b).abs().max().item(), "scale": a.abs().max().item(),
                          "tokens": tokens, "whole": greedy(whole, ids)}))
    dist.destroy_process_group()


def greedy(model, ids: torch.Tensor, n: int = 12) -> list[int]:
    for _ in range(n):
        ids = torch.cat([ids, model(ids, last_only=True)[:, -1].argmax(-1, keepdim=True)], 1)
    return ids[0, -n:].tolist()


if __name__ == "__main__":
    from labkit.engine.parallel.group import _free_port

    mp.spawn(rank_main, args=(int(sys.argv[2]), _free_port(), sys.argv[1]), nprocs=int(sys.argv[2]))
