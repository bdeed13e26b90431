"""When does tensor parallelism pay? Memory per GPU and expected decode speed at tp = 1..8.

Splitting a model over N GPUs (labkit.engine.parallel) divides what each GPU reads per
decode step by about N, so a memory-bound step gets about N times shorter; in exchange,
every layer adds two all-reduces (and the embedding one, the logits an all-gather) that all
GPUs wait for. The messages are tiny (batch x hidden activations: 8 KB per all-reduce for a
7B model at batch 1, against 13.5 GB of weights read per step), so what they cost is mostly
latency, paid 2 x layers + 2 times per step. That is why tensor parallelism pays on NVLink
and much less over PCIe, and why its efficiency drops as the per-GPU step gets shorter.

The model of one decode step on each GPU:

- memory: the shard's shapes (`shard_config`: 1/N of the heads, MLP columns and vocabulary;
  the norms whole; a KV head copied when there are fewer than N) fed to the `cost` formulas;
- compute: the shard's roofline time (`roofline.decode_point`), divided by the fraction of
  the roofline real kernels reach (`kernel_efficiency`);
- communication: each collective takes `latency + traffic / bandwidth`, where a ring
  all-reduce of m bytes sends 2 (N-1)/N m per GPU and an all-gather (N-1)/N of the result.

The interconnect figures are a fit, not a data sheet: NVLink 3's latency and the 0.7 kernel
efficiency reproduce gpt-fast's Llama-2-7B fp16 batch-1 decode on A100s (104.9, 168.8, 254.0
tok/s at 1, 2, 4 GPUs) within 2%; the others are orders of magnitude to be replaced by
measurements (`labkit bench engine --tp N` reports the measured communication share).
"""
from __future__ import annotations

from dataclasses import dataclass

from labkit.engine.parallel.shard import shard_config
from labkit.models.llama import LlamaConfig
from labkit.profile import cost
from labkit.profile.hardware import Device
from labkit.profile.roofline import decode_point

TP_SIZES = (1, 2, 4, 8)


@dataclass(frozen=True)
class Interconnect:
    """How fast GPUs exchange data: what a large all-reduce achieves per GPU ("bus bandwidth")
    and the time of a small one (`latency_us` at 2 GPUs, `per_gpu_us` more per extra GPU)."""

    name: str
    bandwidth_gbs: float
    latency_us: float
    per_gpu_us: float
    note: str = ""

    def all_reduce_seconds(self, nbytes: float, n: int) -> float:
        if n == 1:
            return 0.0
        return self._latency(n) + 2 * (n - 1) / n * nbytes / (self.bandwidth_gbs * 1e9)

    def all_gather_seconds(self, nbytes: float, n: int) -> float:
        """`nbytes`: the gathered result (every GPU receives the others' (N-1)/N of it)."""
        if n == 1:
            return 0.0
        return self._latency(n) + (n - 1) / n * nbytes / (self.bandwidth_gbs * 1e9)

    def _latency(self, n: int) -> float:
        return (self.latency_us + self.per_gpu_us * (n - 2)) * 1e-6


INTERCONNECTS: dict[str, Interconnect] = {i.name: i for i in [
    Interconnect("NVLink 4 (H100/H200 SXM)", 360, 12, 2, "NVSwitch; fitted like NVLink 3, one generation faster"),
    Interconnect("NVLink 3 (A100 SXM)", 230, 18, 3, "NVSwitch; latency fitted to gpt-fast's A100 scaling"),
    Interconnect("PCIe 5.0 x16", 40, 25, 8, "through the host, no NVLink: an estimate"),
    Interconnect("PCIe 4.0 x16", 20, 30, 10, "through the host, no NVLink: an estimate"),
]}


def collectives_per_step(config: LlamaConfig) -> int:
    """All-reduces per forward pass: after attention and after the MLP of every layer, and the
    vocabulary-parallel embedding's (the all-gather of the logits comes on top)."""
    return 2 * config.num_hidden_layers + 1


def comm_bytes_per_token(config: LlamaConfig, n: int, act_bits: float = 16) -> dict[str, float]:
    """Bytes one GPU sends per generated token (ring algorithms): the all-reduces of the hidden
    state and the all-gather of the logits. Zero at n = 1."""
    if n == 1:
        return {"all_reduce": 0.0, "all_gather": 0.0, "total": 0.0}
    hidden = config.hidden_size * act_bits / 8
    reduce = collectives_per_step(config) * 2 * (n - 1) / n * hidden
    gather = (n - 1) / n * config.vocab_size * act_bits / 8
    return {"all_reduce": reduce, "all_gather": gather, "total": reduce + gather}


@dataclass
class TPPlan:
    """One tensor-parallel size: memory per GPU and the expected decode step."""

    tp: int
    memory: cost.MemoryPlan          # per GPU
    compute_s: float
    comm_s: float
    batch: int
    speedup: float = 1.0             # tokens/s against tp = 1
    possible: bool = True            # False: the heads do not split over tp GPUs

    @property
    def step_s(self) -> float:
        return self.compute_s + self.comm_s

    @property
    def tokens_per_s(self) -> float:
        return self.batch / self.step_s

    @property
    def comm_share(self) -> float:
        return self.comm_s / self.step_s

    @property
    def efficiency(self) -> float:
        """Speedup per GPU: 1.0 is perfect scaling."""
        return self.speedup / self.tp


def tp_plan(config: LlamaConfig, device: Device, link: Interconnect, tp: int, batch: int = 1, context: int = 1024,
            weight_bits: float = 16, kv_bits: float = 16, kernel_efficiency: float = 0.7) -> TPPlan:
    """Memory per GPU and the expected decode step of `batch` sequences at `context` tokens."""
    shard = shard_config(config, tp, split_vocab=True)
    memory = cost.memory_plan(shard, batch, context, weight_bits, kv_bits, device.memory_gb)
    compute = decode_point(shard, device, batch, context, weight_bits, kv_bits).seconds / kernel_efficiency
    act = batch * config.hidden_size * 2   # fp16 activations
    comm = (collectives_per_step(config) * link.all_reduce_seconds(act, tp)
            + link.all_gather_seconds(batch * config.vocab_size * 2, tp))
    possible = config.num_attention_heads % tp == 0 and config.intermediate_size % tp == 0
    return TPPlan(tp, memory, compute, comm, batch, possible=possible)


def tp_sweep(config: LlamaConfig, device: Device, link: Interconnect, sizes=TP_SIZES, **kwargs) -> list[TPPlan]:
    """`tp_plan` for each size, with the speedup and efficiency against tp = 1."""
    plans = [tp_plan(config, device, link, n, **kwargs) for n in sizes]
    base = tp_plan(config, device, link, 1, **kwargs).tokens_per_s
    for p in plans:
        p.speedup = p.tokens_per_s / base
    return plans


def plan_table(plans: list[TPPlan]) -> str:
    """The sweep as Markdown."""
    rows = ["| tp | GB per GPU | fits | step ms | comm share | tok/s | speedup | efficiency |",
            "|---:|---:|:---:|---:|---:|---:|---:|---:|"]
    for p in plans:
        if not p.possible:
            rows.append(f"| {p.tp} | | heads do not split | | | | | |")
            continue
        rows.append(f"| {p.tp} | {p.memory.total / cost.GB:.1f} | {'yes' if p.memory.fits else 'no'} | "
                    f"{p.step_s * 1e3:.2f} | {100 * p.comm_share:.0f}% | {p.tokens_per_s:,.0f} | "
                    f"{p.speedup:.2f}x | {100 * p.efficiency:.0f}% |")
    return "\n".join(rows)


class ParallelCalculator:
    """Model x GPU x interconnect x weights x batch x context -> the `tp_sweep` table.

    Controls (ipywidgets): `model_choice`, `device`, `link`, `weight_format`, `batch`,
    `context`. Outputs: `plans` (a `TPPlan` per size) and `summary` (HTML). Displays itself.
    """

    def __init__(self, model: str = "Llama-2-7B", device: str = "A100 80GB", link: str = "NVLink 3 (A100 SXM)",
                 weights: str = "fp16 / bf16", batch: int = 1, context: int = 1024):
        import ipywidgets as widgets

        from labkit.profile.configs import PRESETS
        from labkit.profile.hardware import GPUS
        from labkit.profile.widgets import BATCHES, CONTEXTS, _dropdown, _slider

        self.model_choice = _dropdown(PRESETS, model, "model")
        self.device = _dropdown(GPUS, device, "GPU")
        self.link = _dropdown(INTERCONNECTS, link, "link")
        self.weight_format = _dropdown(cost.WEIGHT_FORMATS, weights, "weights")
        self.batch = _slider(BATCHES, batch, "batch")
        self.context = _slider(CONTEXTS, context, "context")
        self.summary = widgets.HTML()
        self.plans: list[TPPlan] = []
        controls = [self.model_choice, self.device, self.link, self.weight_format, self.batch, self.context]
        self.ui = widgets.VBox([widgets.VBox(controls), self.summary])
        for c in controls:
            c.observe(self.update, names="value")
        self.update()

    def update(self, change=None) -> None:
        from labkit.profile.configs import PRESETS
        from labkit.profile.hardware import GPUS

        config, dev = PRESETS[self.model_choice.value], GPUS[self.device.value]
        self.plans = tp_sweep(config, dev, INTERCONNECTS[self.link.value], batch=self.batch.value,
                              context=self.context.value, weight_bits=cost.WEIGHT_FORMATS[self.weight_format.value])
        per_token = comm_bytes_per_token(config, 2)["total"]
        self.summary.value = (_markdown_html(plan_table(self.plans))
                              + f"<p>each GPU sends {per_token / 1024:.0f} KiB per token at tp=2 "
                              f"({collectives_per_step(config)} all-reduces and one all-gather per step)</p>")

    def _ipython_display_(self):
        from IPython.display import display

        display(self.ui)


def _markdown_html(table: str) -> str:
    lines = [line.strip("|").split("|") for line in table.splitlines()]
    head = "".join(f"<th>{c.strip()}</th>" for c in lines[0])
    body = "".join("<tr>" + "".join(f"<td>{c.strip()}</td>" for c in row) + "</tr>" for row in lines[2:])
    return f"<table><tr>{head}</tr>{body}</table>"
