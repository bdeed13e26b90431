"""A live benchmark for notebook 08: pick backend, weights, KV quantization, batch sizes and
lengths; the engine runs them and the latency and throughput curves are drawn.

`measure(...)` is the plain function (it is what the notebook calls when it runs unattended);
`benchmark_widget()` puts controls and a button on it. Engines are cached per configuration,
so changing only the batch or the lengths does not reload the model. Rows and legends name
the KV cache's storage as the engine holds it: int8 / int4, or the model's own dtype (fp32 on
a CPU, fp16 on a GPU) when it is not quantized.
"""
from __future__ import annotations

from typing import Callable

import torch

from labkit.engine.workload import engine_static, text_ids

_engines: dict[tuple, object] = {}


def _engine(model: str, backend: str, weights: str, quant_policy: int, max_batch: int):
    from labkit.engine import LLM

    key = (model, backend, weights, quant_policy, max_batch)
    if key not in _engines:
        _engines.clear()   # one engine at a time: memory is precious on a laptop
        _engines[key] = LLM(model, backend=backend, quant_policy=quant_policy, max_batch_size=max_batch,
                            weights=None if weights in ("fp32", "fp16") else weights,
                            max_model_len=2048, enable_prefix_caching=False)
    return _engines[key]


def kv_storage(llm) -> str:
    """How `llm`'s KV cache is stored: "int8" / "int4" when quantized, else its dtype ("fp32", "bf16", ...)."""
    kv = llm.engine.kv
    if kv.quant_policy:
        return f"int{kv.quant_policy}"
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(kv.dtype, str(kv.dtype))


def measure(batch_sizes=(1, 4, 8), input_len: int = 64, output_len: int = 32, model: str = "embedded",
            backend: str = "torch", weights: str = "fp32", quant_policy: int = 0,
            on_batch: Callable[[dict], None] | None = None) -> list[dict]:
    """Static-batch runs at each batch size: time to first token, decode step, tokens/s.

    `on_batch(row)` is called as each batch size is done (the widget's progress bar).
    """
    llm = _engine(model, backend, weights, quant_policy, max(batch_sizes))
    source = text_ids(llm.model.config.vocab_size)
    prompts = [source[i * 31:i * 31 + input_len] for i in range(max(batch_sizes))]
    rows = []
    for b in batch_sizes:
        engine_static(llm, b, prompts, 2)   # warm up this shape
        rows.append({"backend": backend, "weights": weights, "kv": kv_storage(llm),
                     **engine_static(llm, b, prompts, output_len)})
        if on_batch is not None:
            on_batch(rows[-1])
    return rows


def label(row: dict) -> str:
    """One configuration's name in legends and progress bars."""
    return f"{row['backend']} {row['weights']}, KV {row['kv']}"


def plot(rows: list[dict], axes=None):
    """Decode latency per step and output tokens/s against the batch size, one line per configuration."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(label(r), []).append(r)
    for name, rs in groups.items():
        b = [r["batch"] for r in rs]
        axes[0].plot(b, [r["decode_ms_per_step"] for r in rs], "o-", label=name)
        axes[1].plot(b, [r["output_tok_s"] for r in rs], "o-", label=name)
    axes[0].set(xlabel="batch size", ylabel="ms per decode step", title="latency")
    axes[1].set(xlabel="batch size", ylabel="output tokens / s", title="throughput")
    axes[1].legend(fontsize=8)
    return axes


def benchmark_widget(model: str = "embedded"):
    """Controls + a Run button; every run adds its curve to the plot (Clear starts over).

    While a run is going, Run and Clear are disabled (a click would queue another run behind
    it) and a progress bar per configuration counts its batch sizes.
    """
    import ipywidgets as W
    import matplotlib.pyplot as plt
    from IPython.display import display

    gpu = torch.cuda.is_available()
    style = {"description_width": "70px"}
    backend = W.Dropdown(options=["torch", "numba"] if gpu else ["torch"], description="backend", style=style)
    weights = W.Dropdown(options=(["fp16", "int8", "int4"] if gpu else ["fp32", "bf16", "int8", "int4"]),
                         description="weights", style=style)
    kv = W.Dropdown(options=[("not quantized", 0), ("int8", 8), ("int4", 4)], description="KV cache", style=style)
    batches = [W.ToggleButton(value=b in (1, 4, 8), description=str(b), tooltip=f"batch size {b}",
                              layout=W.Layout(width="48px")) for b in (1, 2, 4, 8, 16, 32)]
    input_len = W.IntSlider(64, 8, 512, 8, description="prompt", style=style)
    output_len = W.IntSlider(32, 4, 256, 4, description="output", style=style)
    run, clear, out = W.Button(description="Run", button_style="primary"), W.Button(description="Clear"), W.Output()
    progress = W.VBox()
    rows: list[dict] = []

    def redraw():
        out.clear_output(wait=True)
        with out:
            if rows:
                plot(rows)
                plt.show()

    def on_run(_):
        chosen = [int(t.description) for t in batches if t.value]
        if not chosen:
            return
        run.disabled = clear.disabled = True
        bar = W.IntProgress(0, 0, len(chosen), description="loading", style={"description_width": "initial"},
                            bar_style="info", layout=W.Layout(width="600px"))
        progress.children = [*progress.children, bar]

        def done_one(row):
            bar.value += 1
            bar.description = f"{label(row)}: batch {row['batch']} done"

        try:
            rows.extend(measure(chosen, input_len.value, output_len.value, model, backend.value, weights.value,
                                kv.value, on_batch=done_one))
            bar.bar_style = "success"
            redraw()
        except Exception:
            bar.bar_style = "danger"
            raise
        finally:
            run.disabled = clear.disabled = False

    def on_clear(_):
        rows.clear()
        progress.children = []
        redraw()

    run.on_click(on_run)
    clear.on_click(on_clear)
    box = W.VBox([W.HBox([backend, weights, kv]),
                  W.HBox([W.Label("batch sizes", layout=W.Layout(width="74px")), *batches]),
                  W.HBox([input_len, output_len]), W.HBox([run, clear]), progress, out])
    box.run, box.clear, box.batches, box.progress = run, clear, batches, progress   # for tests
    display(box)
    return box
