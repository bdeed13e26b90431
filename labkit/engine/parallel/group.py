"""The processes of a tensor-parallel engine, on torch.distributed.

`LLM(..., tp=N)` is rank 0. It starts ranks 1..N-1 with torch.multiprocessing ("spawn", as
CUDA requires), each of which builds the same `LLM` (the same arguments: its own shard of
the model, its own KV cache blocks for its heads, its own CUDA graphs) and then waits for
steps. Only rank 0 has requests: its scheduler and block manager decide every step, and the
step (token ids, positions, block tables: a few hundred bytes) goes to the other ranks by
a broadcast before rank 0 runs its own share. Every rank runs the same forward pass, so the
collectives inside it (labkit.engine.parallel.shard) line up.

Collectives go through NCCL on GPUs and gloo on CPUs; the step broadcasts always go through
a gloo group on the CPU, where the step is.

Failure: a rank that dies cannot be replaced (its weights and KV blocks are gone, and NCCL
cannot take a new member), so rank 0 watches the other processes: when one exits unasked,
it stops the others, prints one line saying which rank died and how, and ends the process
with exit code 1 (an API server thus exits within a second instead of hanging in a
collective). Ranks 1..N-1 ignore Ctrl-C: rank 0 stops them when it closes or exits, and a
rank whose rank 0 is gone gets a broken connection and exits.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from datetime import timedelta
from multiprocessing.connection import wait

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from labkit.engine.parallel.shard import Comm, check_split, gather_logits, shard
from labkit.models.llama import Llama, LlamaConfig

START_TIMEOUT_S = 600        # loading a large model on every rank at once takes a while
RANK_DIED_EXIT_CODE = 1

_WORKER: "TensorParallel | None" = None   # set in ranks 1..N-1 while their LLM is built


class TensorParallel:
    """This process's place in the group: rank, world size, device, collectives, and (on
    rank 0) the other ranks' processes."""

    def __init__(self, rank: int, world: int, device: torch.device, control, procs: list | None = None):
        self.rank, self.world, self.device, self.control = rank, world, device, control
        self.comm = Comm(rank, world)
        self.procs = procs or []
        self.closing = threading.Event()   # set once rank 0 stops the others itself: no alarm then
        if procs:   # neither holds on to self: an LLM dropped (or failing to build) still stops its ranks
            threading.Thread(target=_watch, args=(self.procs, self.closing), name="labkit-tp-watch",
                             daemon=True).start()
            self._finalizer = weakref.finalize(self, _close, self.procs, self.closing)

    # ------------------------------------------------------------------ starting
    @classmethod
    def start(cls, tp: int, device: str | None, llm_args: dict) -> "TensorParallel":
        """Rank 0: start ranks 1..tp-1 (each builds `LLM(**llm_args)`) and join them. In one of
        those ranks: the group it joined."""
        if _WORKER is not None:
            return _WORKER
        if dist.is_initialized():   # one default process group per process
            raise ValueError("this process already runs a tensor-parallel engine (or another torch.distributed "
                             "group): close it before starting another")
        dev = rank_device(device, 0)
        preflight(llm_args["model"], llm_args.get("weights"), tp, dev)
        if dev.type == "cuda" and torch.cuda.device_count() < dev.index + tp:
            raise ValueError(f"tp={tp} needs {tp} GPUs from {dev}, this machine has {torch.cuda.device_count()}")
        port = _free_port()
        threads = max(1, torch.get_num_threads() // tp) if dev.type == "cpu" else torch.get_num_threads()
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker_main, args=(r, tp, port, device, threads, llm_args),
                             name=f"labkit-tp-rank{r}", daemon=True) for r in range(1, tp)]
        for p in procs:
            p.start()
        store = dist.TCPStore("127.0.0.1", port, tp, is_master=True, wait_for_workers=False,
                              timeout=timedelta(seconds=START_TIMEOUT_S))
        _wait_joined(store, procs)
        torch.set_num_threads(threads)   # a CPU's cores are shared among the ranks
        return cls(0, tp, dev, _init(store, 0, tp, dev), procs)

    # ------------------------------------------------------------------ building the shard
    def load(self, spec: str, dtype: torch.dtype | None, backend: str):
        """This rank's shard of MODEL `spec` and the tokenizer (loaded on the CPU, split, then
        moved: no device holds the whole model)."""
        from labkit.loading import default_dtype, load_model

        model, tokenizer = load_model(spec, device="cpu", dtype=dtype or default_dtype(str(self.device)),
                                      backend=backend)
        return self.shard(model), tokenizer

    def shard(self, model: Llama) -> Llama:
        return shard(model, self.comm).to(self.device)

    def gather_logits(self, model: Llama) -> None:
        gather_logits(model, model.config.vocab_size, self.comm)

    def agree(self, num_blocks: int) -> int:
        """The KV blocks every rank can hold (the fewest): block ids mean the same on every rank."""
        t = torch.tensor([num_blocks])
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.control)
        return int(t)

    def attach(self, runner) -> None:
        """Rank 0 hands every step to the other ranks before running its own share."""
        if self.rank == 0:
            runner.share = self.run_step

    # ------------------------------------------------------------------ steps
    def run_step(self, step, execute):
        """Rank 0: broadcast the step, run it, and hold a Ctrl-C until it is over: a rank 0
        that stopped between two collectives would leave the others waiting in one, out of
        step for good (steps that run in a background thread, as the server's do, are never
        interrupted)."""
        with _ctrl_c_held():
            self.broadcast(step)
            return execute(step)

    def broadcast(self, step) -> None:
        dist.broadcast_object_list([step], src=0, group=self.control)

    def serve(self, runner) -> None:
        """Ranks 1..N-1: run the steps rank 0 broadcasts until it sends None."""
        while True:
            box = [None]
            dist.broadcast_object_list(box, src=0, group=self.control)
            if box[0] is None:
                return
            runner.execute(box[0])

    # ------------------------------------------------------------------ stopping
    def close(self) -> None:
        """Rank 0: tell the other ranks to exit, wait a little for them, then end them."""
        if self.rank != 0 or self.closing.is_set():
            return
        self.closing.set()
        if all(p.is_alive() for p in self.procs):
            try:
                self.broadcast(None)
            except RuntimeError:   # a rank went away meanwhile
                pass
        self._finalizer()
        dist.destroy_process_group()


def _watch(procs: list, closing: threading.Event) -> None:
    """Rank 0: end everything when another rank exits unasked."""
    sentinels = {p.sentinel: (r, p) for r, p in enumerate(procs, 1)}
    ready = wait(list(sentinels))
    if closing.is_set():
        return
    rank, proc = sentinels[ready[0]]
    proc.join(0.1)
    code = proc.exitcode
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
    print(f"labkit: tensor-parallel rank {rank} (pid {proc.pid}) {how}; the other ranks cannot go on "
          f"without its weights and KV cache: stopping all {len(procs) + 1} ranks", file=sys.stderr, flush=True)
    _stop_processes(procs, grace_s=0)
    os._exit(RANK_DIED_EXIT_CODE)


def _close(procs: list, closing: threading.Event) -> None:
    """Stop the other ranks (after `close` told them to exit, or at interpreter exit)."""
    closing.set()
    _stop_processes(procs, grace_s=1.0)


def preflight(model: str | Llama, weights: str | None, tp: int, device: torch.device) -> None:
    """Raise ValueError, before any process starts, for a model that `tp` ranks cannot split:
    heads, MLP columns, and quantization groups (a checkpoint's, or those `weights` makes)."""
    from labkit.quant.qlinear import QuantLinear

    group, int4 = None, False
    if isinstance(model, Llama):
        config = model.config
        quant = next((m for m in model.modules() if isinstance(m, QuantLinear)), None)
        if quant is not None:
            group, int4 = None if quant.per_channel else quant.group_size, quant.bits == 4
    else:
        from labkit.models.loader import read_config, resolve
        from labkit.quant.checkpoint import quant_settings

        raw = read_config(resolve(model))
        config = LlamaConfig.from_hf(raw)
        if "quantization_config" in raw:
            bits, group, _ = quant_settings(raw)
            int4 = bits == 4
    if weights == "int4":   # the groups labkit.engine.weights quantizes in
        from labkit.engine.weights import CPU_INT4_GROUP, GPU_INT4_GROUP

        group, int4 = (CPU_INT4_GROUP if device.type == "cpu" else GPU_INT4_GROUP), True
    check_split(config, tp, group, int4)


@contextmanager
def _ctrl_c_held():
    """Ctrl-C (SIGINT) delivered at the end of the block instead of inside it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
        if caught:
            signal.raise_signal(signal.SIGINT)


def rank_device(device: str | None, rank: int) -> torch.device:
    """Rank r's device: the r-th GPU from the one asked for (cuda:0 by default), or the CPU."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        return torch.device("cuda", (dev.index or 0) + rank)
    return dev


def _init(store, rank: int, world: int, device: torch.device):
    """Join the default group (NCCL on GPUs, gloo on CPUs); return the gloo group for steps."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                            timeout=timedelta(seconds=START_TIMEOUT_S))
    return dist.new_group(backend="gloo") if backend == "nccl" else dist.group.WORLD


def _worker_main(rank: int, world: int, port: int, device: str | None, threads: int, llm_args: dict) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the whole process group: rank 0 decides
    torch.set_num_threads(threads)
    from labkit.engine.llm import LLM

    store = dist.TCPStore("127.0.0.1", port, world, is_master=False, timeout=timedelta(seconds=START_TIMEOUT_S))
    store.set(f"joined/{rank}", "1")
    dev = rank_device(device, rank)
    _WORKER = TensorParallel(rank, world, dev, _init(store, rank, world, dev))
    try:
        llm = LLM(**llm_args)
        _WORKER.serve(llm.engine.runner)
    except Exception:
        if mp.parent_process().is_alive():
            raise
        sys.exit(RANK_DIED_EXIT_CODE)   # rank 0 went away (a broken connection): nothing left to serve
    dist.destroy_process_group()


def _wait_joined(store, procs: list) -> None:
    """Wait until every rank reached the store, failing at once if one died first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    for r, p in enumerate(procs, 1):
        while not store.check([f"joined/{r}"]):
            if not p.is_alive():
                _stop_processes(procs)
                raise RuntimeError(f"tensor-parallel rank {r} exited with code {p.exitcode} while starting")
            if time.monotonic() > deadline:
                _stop_processes(procs)
                raise TimeoutError(f"tensor-parallel rank {r} did not start within {START_TIMEOUT_S} s")
            time.sleep(0.05)


def _stop_processes(procs: list, grace_s: float = 5.0) -> None:
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(1.0)
        if p.is_alive():
            p.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
