"""Run one scheduled step through the model over the paged KV cache.

A step mixes requests at different stages: some decode one token, some prefill a chunk of
their prompt. The runner flattens all their new tokens into one row (B=1, T=all tokens), so
every linear layer runs once for the whole step, and passes explicit positions. Only
attention needs to know where one request ends and the next begins: that is the
`PagedAttention` context the model calls through its `cache.attend` hook
(`labkit.engine.paged_attention`: decodes first in the row, attended to together over their
block tables; each prefill chunk on its own).

Backends: `torch` (any device, the reference: `PagedAttention`) and `numba` (decode
attention and K/V writes with the kernels of `labkit.kernels`: `NumbaAttention`). On a GPU,
decode-only steps replay a CUDA graph captured per batch-size bucket: a decode step is
hundreds of small launches, and replaying them costs a few microseconds instead of tens per
launch. With `compile=True` the decode step is first run through `torch.compile` (see `ops`):
on a GPU before graph capture; on a CPU, where there are no graphs, decode-only steps then
run the compiled step itself (shapes marked dynamic, so a growing context does not
recompile), which fuses the small operations and drops the Python between them, the larger
part of a small model's step on a CPU (figures in docs/benchmarks.md). Each kind of step
(batch 1; several rows) compiles once, which `LLM.warmup` does up front. A compiled step
checks only the guards on its inputs (`_guards_on_inputs`), and each runner compiles its
own copy of the code (`_own_code`).
Steps that carry a prefill chunk always run eagerly (their structure varies step to step).
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field

import torch

from labkit.engine import fuse, ops
from labkit.engine.config import EngineConfig
from labkit.engine.kv_cache import PagedKVCache
from labkit.engine.paged_attention import NumbaAttention, PagedAttention, StepInputs
from labkit.engine.scheduler import Batch
from labkit.engine.sequence import Sequence
from labkit.models.llama import Llama


@dataclass
class HostStep:
    """A flattened step as Python lists, before it goes to the device."""
    ids: list[int] = field(default_factory=list)
    pos: list[int] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    tables: list[list[int]] = field(default_factory=list)     # block tables of the decodes
    lens: list[int] = field(default_factory=list)             # context lengths of the decodes
    logits_at: list[int] = field(default_factory=list)
    prefills: list[tuple[int, int, int, list[int]]] = field(default_factory=list)  # (start, n, context, blocks)


STATIC_FIELDS = ("input_ids", "positions", "slot_mapping", "block_tables", "context_lens")   # what a replay refreshes


class ModelRunner:
    def __init__(self, model: Llama, kv: PagedKVCache, config: EngineConfig = EngineConfig()):
        self.model, self.kv, self.backend = model, kv, config.backend
        self.device = model.model.embed_tokens.weight.device
        self.attention_cls = NumbaAttention if config.backend == "numba" else PagedAttention
        self.max_blocks = -(-config.max_model_len // kv.block_size)
        self.graphs: dict[int, tuple] = {}   # bucket -> (graph, static inputs, their pinned host copies, logits)
        self.decode_forward = self.forward
        self.event_pairs: list | None = None   # set to [] to time graph replays on the GPU (bench)
        self.share = None   # tensor parallelism: runs each step on every rank (labkit.engine.parallel)
        if config.backend == "numba" and self.device.type == "cuda" and fuse.fused_decode():
            fuse.fuse_decode_layers(model)   # one-row steps: norms, SiLU * up, residual adds inside the GEMVs
        if config.compile:   # fuse the small element-wise kernels of the decode step (see labkit.engine.ops)
            ops.route_quant_linears(model)
            # on a GPU the batch size turns symbolic after the first recompile; a CPU's steps also
            # change the context length every step, so every size is symbolic from the start
            self.decode_forward = torch.compile(_own_code(self.forward), fullgraph=True,
                                                dynamic=True if self.device.type == "cpu" else None,
                                                options=_compile_options())
        use_cuda_graph = config.use_cuda_graph
        if use_cuda_graph is None:
            use_cuda_graph = self.device.type == "cuda"
        if use_cuda_graph:
            self.capture_graphs(config.max_batch_size)

    # ------------------------------------------------------------------ inputs
    def prepare(self, batch: Batch) -> tuple[HostStep, list[Sequence]]:
        """Flatten a batch (decodes first); returns the step and the sequences that sample."""
        bs = self.kv.block_size
        order = sorted(range(len(batch)), key=lambda i: batch.num_tokens[i] != 1)
        step, sampling = HostStep(), []
        for seq in batch.padding:   # static batching's finished rows: computed, written to scratch, unused
            context = seq.num_computed
            step.ids.append(seq.token_ids[-1])
            step.pos.append(context - 1)
            step.slots.append(self.kv.scratch_block * bs)
            step.tables.append(seq.block_table[:-(-context // bs)])
            step.lens.append(context)
        for i in order:
            seq, n = batch.seqs[i], batch.num_tokens[i]
            start, context = len(step.ids), seq.num_computed + n
            step.ids += seq.token_ids[seq.num_computed:context]
            step.pos += range(seq.num_computed, context)
            step.slots += [seq.block_table[p // bs] * bs + p % bs for p in range(seq.num_computed, context)]
            used = seq.block_table[:-(-context // bs)]
            if n == 1:
                step.tables.append(used)
                step.lens.append(context)
            else:
                step.prefills.append((start, n, context, used))
            if context == len(seq):
                step.logits_at.append(len(step.ids) - 1)
                sampling.append(seq)
        return step, sampling

    def to_device(self, step: HostStep) -> StepInputs:
        width = max((len(t) for t in step.tables), default=0)
        dev = self.device
        tensor = lambda x, dt: torch.tensor(x, dtype=dt, device=dev)  # noqa: E731
        return StepInputs(
            input_ids=tensor(step.ids, torch.long), positions=tensor(step.pos, torch.long),
            slot_mapping=tensor(step.slots, torch.long),
            block_tables=tensor([t + [-1] * (width - len(t)) for t in step.tables], torch.int32).reshape(len(step.tables), width),
            context_lens=tensor(step.lens, torch.int32), logits_indices=tensor(step.logits_at, torch.long),
            max_context=max(step.lens, default=0), needs_mask=len(step.lens) > 1,
            prefills=[(s, n, c, tensor(b, torch.long)) for s, n, c, b in step.prefills])

    # ------------------------------------------------------------------ forward
    def forward(self, inputs: StepInputs) -> torch.Tensor:
        """Logits [S, V] (float32) at `logits_indices`.

        The model's own pieces in order, as `Llama.forward` runs them, except that the final
        norm and the vocabulary projection (the largest matmul of a small model) run only on
        the rows that sample, which need not be the last of the flattened row.
        """
        m = self.model
        x = m.model.embed_tokens(inputs.input_ids[None])
        cos, sin = m.rope(inputs.positions[None], x.dtype)
        cache = self.attention_cls(self.kv, inputs)
        for layer in m.model.layers:
            x = layer(x, cos, sin, cache)
        if inputs.logits_indices.numel() == 0:   # a prefill chunk that ends mid-prompt samples nothing
            return x.new_empty(0, m.config.vocab_size, dtype=torch.float32)
        return m.lm_head(m.model.norm(x[0, inputs.logits_indices])).float()

    def run(self, batch: Batch) -> tuple[torch.Tensor, list[Sequence]]:
        step, sampling = self.prepare(batch)
        if self.share is not None:
            return self.share(step, self.execute), sampling
        return self.execute(step), sampling

    @torch.inference_mode()
    def execute(self, step: HostStep) -> torch.Tensor:
        """Logits of a prepared step: a graph replay, the compiled decode step, or eagerly."""
        if not step.prefills and self.graphs and len(step.lens) <= max(self.graphs):
            return self._replay(step)
        if not step.prefills and not self.graphs:   # no graphs (a CPU): the decode step as compiled, if it was
            return self.decode_forward(self.to_device(step))
        return self.forward(self.to_device(step))

    # ------------------------------------------------------------------ CUDA graphs
    def graph_buckets(self, max_batch_size: int) -> list[int]:
        return sorted({b for b in (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128) if b < max_batch_size} | {max_batch_size})

    def capture_graphs(self, max_batch_size: int) -> None:
        """One graph per batch-size bucket, over static input buffers padded to the bucket.

        Each step is written into pinned host copies of those buffers, and the graph starts
        with the asynchronous copies from them (instead of a dozen small blocking transfers
        and fills, or five launches from the host per step). The buffers stay separate
        tensors: inputs that alias one storage confuse torch.compile across the recompiles
        of the buckets. Padding rows write to the scratch block and
        attend to one token of it. Buckets are captured largest first so the smaller ones
        reuse its memory pool.
        """
        pool = None
        for B in reversed(self.graph_buckets(max_batch_size)):
            inputs, staging = self.graph_inputs(B), self.graph_inputs(B, pinned=True)
            self.fill(staging, HostStep(), B)
            _send(staging, inputs)
            with torch.inference_mode():
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):   # warm up: kernels compiled, workspaces allocated
                        self.decode_forward(inputs)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    _send(staging, inputs)   # the replay itself copies the step in from pinned memory
                    out = self.decode_forward(inputs)
            pool = graph.pool()
            self.graphs[B] = (graph, inputs, staging, out)
        torch.cuda.synchronize()

    def graph_inputs(self, B: int, pinned: bool = False) -> StepInputs:
        """The static inputs of a bucket of B rows (on the device, or in pinned host memory)."""
        dev, mb = ("cpu" if pinned else self.device), self.max_blocks

        def new(*shape: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
            t = torch.zeros(*shape, dtype=dtype, device=dev)
            return t.pin_memory() if pinned else t

        return StepInputs(input_ids=new(B), positions=new(B), slot_mapping=new(B),
                          block_tables=new(B, mb, dtype=torch.int32), context_lens=new(B, dtype=torch.int32),
                          logits_indices=torch.arange(B, device=dev), max_context=mb * self.kv.block_size)

    def fill(self, inputs: StepInputs, step: HostStep, bucket: int) -> None:
        """Write a decode step, padded to `bucket` rows, into static host inputs (`graph_inputs`).

        Through numpy views of the tensors: a dozen torch calls cost more host time than the
        rest of a batch-1 step's bookkeeping, numpy assignments a microsecond each.
        """
        B, scratch = len(step.lens), self.kv.scratch_block
        ids, pos, slots = inputs.input_ids.numpy(), inputs.positions.numpy(), inputs.slot_mapping.numpy()
        lens, tables = inputs.context_lens.numpy(), inputs.block_tables.numpy()
        ids[B:], pos[B:], slots[B:], lens[B:] = 0, 0, scratch * self.kv.block_size, 1
        tables.fill(scratch)
        if B:
            ids[:B], pos[:B], slots[:B], lens[:B] = step.ids, step.pos, step.slots, step.lens
            for row, table in zip(tables, step.tables):
                row[:len(table)] = table

    def _replay(self, step: HostStep) -> torch.Tensor:
        B = len(step.lens)
        bucket = min(b for b in self.graphs if b >= B)
        graph, inputs, staging, out = self.graphs[bucket]
        self.fill(staging, step, bucket)   # safe: the last replay's logits were read, so it is done
        if self.event_pairs is not None:   # GPU time of the replay alone, read later (no sync here)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            self.event_pairs.append((start, end))
        else:
            graph.replay()
        return out[:B]


def _guards_on_inputs(entries: list) -> list[bool]:
    """Which of Dynamo's guards a compiled step checks before each call: those on the step's
    inputs, not the ~5,000 on the model's modules and the cache's tensors.

    Before running a compiled function, Dynamo checks that everything it read while tracing
    is as it was. Here that is mostly the model (every layer's weights and attributes) and the
    KV cache, which the engine owns and never changes after it is built; checking them cost
    a tenth of a small model's CPU decode step. Guards on the step's inputs stay: a step whose kind
    differs (a mask or none, other sizes) must still pick or compile its own graph.
    """
    kept = torch.compiler.skip_guard_on_all_nn_modules_unsafe(entries)
    return [keep and not (e.name == "self.kv" or e.name.startswith(("self.kv.", "self.kv[")))
            for keep, e in zip(kept, entries)]


def _own_code(method):
    """`method` as a new function with a code object of its own.

    Dynamo keeps compiled code per code object, and picks an entry by its guards. The guard
    filter above drops the guards on the model, so two runners compiling the same
    `ModelRunner.forward` (two engines in one process: a full-precision and an int4 model)
    would share entries, and the second would run the first model's compiled code. A copy
    of the code per runner gives each runner a cache of its own (freed with it)."""
    fn = method.__func__
    own = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    return types.MethodType(own, method.__self__)


def _compile_options() -> dict:
    """`torch.compile` options of the decode step: the guard filter above, and no per-call
    checks of the inputs' sizes, strides and alignment in Inductor's generated code.

    The compiled step's inputs are mostly the model's parameters (several hundred), which the
    engine owns and never re-lays out; on a CPU, checking each of them on every call cost
    about a twentieth of a small W4 model's decode step. Guard filters came with torch 2.8
    (labkit runs on 2.5 and later)."""
    from torch._inductor import config as inductor

    options = {name: False for name in ("size_asserts", "alignment_asserts") if hasattr(inductor, name)}
    if hasattr(torch.compiler, "skip_guard_on_all_nn_modules_unsafe"):
        options["guard_filter_fn"] = _guards_on_inputs
    return options


def _send(staging: StepInputs, inputs: StepInputs) -> None:
    """Copy the pinned host inputs to the graph's static inputs, asynchronously (captured into
    the graph: every replay reads the host buffers as they are when it runs)."""
    for name in STATIC_FIELDS:
        getattr(inputs, name).copy_(getattr(staging, name), non_blocking=True)
