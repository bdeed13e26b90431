"""A live benchmark for notebook 08: pick backend, weights, KV quantization, batch sizes and
lengths; the engine runs them and the latency and throughput curves are drawn.

`measure(...)` is the plain function (it is what the notebook calls when it runs unattended);
`benchmark_widget()` puts controls and a button on it. Engines are cached per configuration,
so changing only the batch or the lengths does not reload the model.
"""
from __future__ import annotations

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


def measure(batch_sizes=(1, 4, 8), input_len: int = 64, output_len: int = 32, model: str = "embedded",
            backend: str = "torch", weights: str = "fp32", quant_policy: int = 0) -> list[dict]:
    """Static-batch runs at each batch size: time to first token, decode step, tokens/s."""
    llm = _engine(model, backend, weights, quant_policy, max(batch_sizes))
    source = text_ids(llm.model.config.vocab_size)
    prompts = [source[i * 31:i * 31 + input_len] for i in range(max(batch_sizes))]
    rows = []
    for b in batch_sizes:
        engine_static(llm, b, prompts, 2)   # warm up this shape
        rows.append({"backend": backend, "weights": weights, "kv": quant_policy,
                     **engine_static(llm, b, prompts, output_len)})
    return rows


def plot(rows: list[dict], axes=None):
    """Decode latency per step and output tokens/s against the batch size, one line per configuration."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(f"{r['backend']} {r['weights']} kv{r['kv'] or 16}", []).append(r)
    for label, rs in groups.items():
        b = [r["batch"] for r in rs]
        axes[0].plot(b, [r["decode_ms_per_step"] for r in rs], "o-", label=label)
        axes[1].plot(b, [r["output_tok_s"] for r in rs], "o-", label=label)
    axes[0].set(xlabel="batch size", ylabel="ms per decode step", title="latency")
    axes[1].set(xlabel="batch size", ylabel="output tokens / s", title="throughput")
    axes[1].legend(fontsize=8)
    return axes


def benchmark_widget(model: str = "embedded"):
    """Controls + a Run button; every run adds its curve to the plot (Clear starts over)."""
    import ipywidgets as W
    import matplotlib.pyplot as plt
    from IPython.display import display

    gpu = torch.cuda.is_available()
    backend = W.Dropdown(options=["torch", "numba"] if gpu else ["torch"], description="backend")
    weights = W.Dropdown(options=(["fp16", "int8", "int4"] if gpu else ["fp32", "bf16", "int8", "int4"]),
                         description="weights")
    kv = W.Dropdown(options=[("fp", 0), ("int8", 8), ("int4", 4)], description="KV cache")
    batches = W.SelectMultiple(options=[1, 2, 4, 8, 16, 32], value=(1, 4, 8), description="batch")
    input_len = W.IntSlider(64, 8, 512, 8, description="prompt")
    output_len = W.IntSlider(32, 4, 256, 4, description="output")
    run, clear, out = W.Button(description="Run", button_style="primary"), W.Button(description="Clear"), W.Output()
    rows: list[dict] = []

    def redraw():
        out.clear_output(wait=True)
        with out:
            if rows:
                plot(rows)
                plt.show()

    def on_run(_):
        with out:
            print("running...")
        rows.extend(measure(sorted(batches.value), input_len.value, output_len.value, model, backend.value,
                            weights.value, kv.value))
        redraw()

    def on_clear(_):
        rows.clear()
        redraw()

    run.on_click(on_run)
    clear.on_click(on_clear)
    box = W.VBox([W.HBox([backend, weights, kv]), W.HBox([batches, W.VBox([input_len, output_len, W.HBox([run, clear])])]),
                  out])
    display(box)
    return box
