"""Two ipywidgets dashboards on one `Dashboard` layout: a memory planner and a roofline explorer.

Both are widgets (`labkit.profile.memory_planner(...)` and `roofline_explorer(...)` build
them), so a test can build one without a browser, set its controls programmatically and
read what it computed (`.plan`, `.point`, the `.summary` HTML, the `.chart` PNG). The chart
is a PNG in an `Image` widget rather than a live matplotlib backend: it looks the same in
JupyterLab, VS Code, nbclient and CI, and never leaks pyplot figures. It is drawn at twice
its displayed size (sharp on any screen) and shown at its own width beside the controls,
never stretched to the output area, so controls, numbers and the whole chart fit on one
screen (below the controls when the output area is too narrow for both).
"""
from __future__ import annotations

import ipywidgets as widgets

from labkit.profile import cost
from labkit.profile.configs import PRESETS
from labkit.profile.hardware import GPUS, THIS_MACHINE, get_device
from labkit.profile.plots import figure_png, new_figure, plot_decode_roofline, plot_memory_breakdown
from labkit.profile.roofline import critical_batch, decode_point

BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
CONTEXTS = [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]
_STYLE = {"description_width": "90px"}
_WIDE = widgets.Layout(width="420px")
CSS_DPI, PNG_DPI = 100, 200       # displayed pixels per inch of a figure; pixels per inch in its PNG


class Dashboard(widgets.VBox):
    """Controls above an HTML `summary` on the left, a PNG `chart` on their right (wrapping below
    when the output area is narrow); any control's change calls `update`, which a dashboard
    writes: recompute, set `summary.value`, draw a figure and `show` it."""

    def __init__(self, controls: list[widgets.ValueWidget]):
        self.summary = widgets.HTML()
        self.chart = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto"))
        left = widgets.VBox([*controls, self.summary], layout=widgets.Layout(width="440px"))
        super().__init__([widgets.HBox([left, self.chart],
                                       layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start"))])
        for c in controls:
            c.observe(self.update, names="value")
        self.update()

    def update(self, change=None) -> None:
        raise NotImplementedError

    def show(self, fig) -> None:
        """Render `fig` into the chart at PNG_DPI and display it at its size in CSS pixels."""
        self.chart.value = figure_png(fig, dpi=PNG_DPI)
        self.chart.layout.width = f"{fig.get_figwidth() * CSS_DPI:.0f}px"


def _dropdown(options, value, description):
    return widgets.Dropdown(options=list(options), value=value, description=description, style=_STYLE, layout=_WIDE)


def _slider(options, value, description):
    return widgets.SelectionSlider(options=options, value=value, description=description, style=_STYLE,
                                   layout=_WIDE, continuous_update=False)


class MemoryPlanner(Dashboard):
    """Model x formats x batch x context -> GB of weights / KV cache / activations, and the fit.

    Controls: `model_choice`, `weight_format`, `kv_format`, `batch`, `context`, `device`.
    Outputs: `plan` (a `cost.MemoryPlan`), `max_batch`, `summary` (HTML), `chart` (PNG).
    """

    def __init__(self, model: str = "Llama-2-7B", weights: str = "fp16 / bf16", kv: str = "fp16 / bf16",
                 batch: int = 8, context: int = 4096, device: str = "H100 SXM"):
        self.model_choice = _dropdown(PRESETS, model, "model")
        self.weight_format = _dropdown(cost.WEIGHT_FORMATS, weights, "weights")
        self.kv_format = _dropdown(cost.KV_FORMATS, kv, "KV cache")
        self.batch = _slider(BATCHES, batch, "batch")
        self.context = _slider(CONTEXTS, context, "context")
        self.device = _dropdown([*GPUS, THIS_MACHINE], device, "device")
        self.plan: cost.MemoryPlan | None = None
        self.max_batch = 0
        super().__init__([self.model_choice, self.weight_format, self.kv_format, self.batch, self.context, self.device])

    def update(self, change=None) -> None:
        """Recompute the plan and redraw (called on every control change)."""
        config = PRESETS[self.model_choice.value]
        wbits, kbits = cost.WEIGHT_FORMATS[self.weight_format.value], cost.KV_FORMATS[self.kv_format.value]
        dev = get_device(self.device.value)
        self.plan = cost.memory_plan(config, self.batch.value, self.context.value, wbits, kbits, dev.memory_gb)
        self.max_batch = cost.max_batch(config, self.context.value, dev.memory_gb, wbits, kbits)
        gb = self.plan.gb()
        verdict = ("<b style='color:green'>fits</b>" if self.plan.fits
                   else "<b style='color:red'>does not fit</b>")
        self.summary.value = (
            f"<div style='margin:0.5em 0 0 1em; line-height:1.5'><b>{self.model_choice.value}</b>: {cost.param_count(config) / 1e9:.2f} B params<br>"
            f"weights: {gb['weights']:.2f} GB<br>"
            f"KV cache: {gb['kv_cache']:.2f} GB "
            f"({cost.kv_bytes_per_token(config, kbits) / 2**20:.3f} MiB/token)<br>"
            f"activations: {gb['activations']:.2f} GB<br>"
            f"<b>total: {gb['total']:.2f} GB</b> on {dev.name} "
            f"({self.plan.capacity / cost.GB:.1f} GB usable of {dev.memory_gb:g}): {verdict}<br>"
            f"largest batch at context {self.context.value}: {self.max_batch}</div>")
        fig = new_figure((6.0, 2.6))
        plot_memory_breakdown(self.plan, f"B={self.batch.value}, ctx={self.context.value}", ax=fig.subplots())
        self.show(fig)


class RooflineExplorer(Dashboard):
    """Decode steps at batch 1..512 on a device's roofline; the chosen batch is highlighted.

    Controls: `model_choice`, `device`, `weight_format`, `kv_format`, `context`, `batch`.
    Outputs: `point` (a `roofline.DecodePoint` for the chosen batch), `critical`
    (the batch that reaches the ridge, or None), `summary` (HTML), `chart` (PNG).
    """

    def __init__(self, model: str = "Llama-2-7B", device: str = "H100 SXM", weights: str = "fp16 / bf16",
                 kv: str = "fp16 / bf16", context: int = 1024, batch: int = 1):
        self.model_choice = _dropdown(PRESETS, model, "model")
        self.device = _dropdown([*GPUS, THIS_MACHINE], device, "device")
        self.weight_format = _dropdown(cost.WEIGHT_FORMATS, weights, "weights")
        self.kv_format = _dropdown(cost.KV_FORMATS, kv, "KV cache")
        self.context = _slider(CONTEXTS, context, "context")
        self.batch = _slider(BATCHES, batch, "batch")
        self.point = None
        self.critical: int | None = None
        super().__init__([self.model_choice, self.device, self.weight_format, self.kv_format, self.context, self.batch])

    def update(self, change=None) -> None:
        """Recompute the decode point and the critical batch, and redraw (called on every control change)."""
        config = PRESETS[self.model_choice.value]
        wbits, kbits = cost.WEIGHT_FORMATS[self.weight_format.value], cost.KV_FORMATS[self.kv_format.value]
        dev = get_device(self.device.value)
        ctx, b = self.context.value, self.batch.value
        self.point = p = decode_point(config, dev, b, ctx, wbits, kbits)
        self.critical = critical_batch(config, dev, ctx, wbits, kbits)
        crit = (f"batch {self.critical} reaches the ridge" if self.critical is not None
                else "no batch reaches the ridge: the KV cache grows with the batch too")
        self.summary.value = (
            f"<div style='margin:0.5em 0 0 1em; line-height:1.5'>decode step, batch {b}, context {ctx}:<br>"
            f"{p.flops / 1e9:.1f} GFLOP, {p.bytes / 1e9:.2f} GB read<br>"
            f"intensity <b>{p.intensity:.1f}</b> FLOP/byte; ridge of {dev.name}: <b>{dev.ridge:.0f}</b><br>"
            f"<b>{p.bound}-bound</b>: at most {p.attainable_flops / 1e12:.3g} of {dev.tflops:g} TFLOP/s "
            f"({100 * p.attainable_flops / dev.flops_per_s:.1f}%)<br>"
            f"step &ge; {p.seconds * 1e3:.2f} ms, &le; {p.tokens_per_s:,.0f} tokens/s<br>{crit}</div>")
        fig = new_figure((6.0, 3.7))
        plot_decode_roofline(config, dev, BATCHES, ctx, wbits, kbits, highlight=b, ax=fig.subplots())
        self.show(fig)
