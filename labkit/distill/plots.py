"""The loss curve and the evaluations of a distillation run, drawn (matplotlib)."""
from __future__ import annotations

import matplotlib.pyplot as plt


def plot_curve(data: dict, label: str | None = None, axes=None):
    """Training loss per step (left) and the student's perplexity at each evaluation (right),
    against tokens trained on. `data` is a run's curve.json; pass `axes` to overlay runs."""
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    loss_ax, ppl_ax = axes
    label = label or data["config"]["loss"]
    loss_ax.plot([c["tokens"] for c in data["curve"]], [c["loss"] for c in data["curve"]], label=label)
    ppl_ax.plot([e["tokens"] for e in data["evals"]], [e["ppl"] for e in data["evals"]], marker="o", label=label)
    loss_ax.set(xlabel="tokens trained on", ylabel="training loss", title="loss")
    ppl_ax.set(xlabel="tokens trained on", ylabel="perplexity (evaluation text)", title="student perplexity", yscale="log")
    for ax in axes:
        ax.legend()
    return axes[0].figure
