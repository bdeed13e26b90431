"""The live benchmark widget of notebook 08, driven without a browser: Run is disabled while it
runs, the configuration's progress bar counts its batch sizes, and rows name the KV cache's
real storage (fp32 on a CPU when it is not quantized)."""
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

from labkit.engine.widgets import benchmark_widget, label  # noqa: E402


@pytest.mark.slow
def test_run_disables_the_buttons_and_fills_a_progress_bar(monkeypatch):
    import labkit.engine.widgets as widgets

    box = benchmark_widget()
    rows, seen = [], []
    measure = widgets.measure
    monkeypatch.setattr(widgets, "measure", lambda *a, **k: rows.extend(measure(*a, **k)) or rows)
    box.run.observe(lambda change: seen.append(change.new), names="disabled")
    for toggle in box.batches:                   # batch sizes 1 and 2 only, no Ctrl/Shift-click
        toggle.value = toggle.description in ("1", "2")
    input_len, output_len = box.children[2].children
    input_len.value, output_len.value = 8, 4

    box.run.click()
    assert seen == [True, False] and not box.clear.disabled
    [bar] = box.progress.children
    assert (bar.value, bar.max, bar.bar_style) == (2, 2, "success")
    assert [r["batch"] for r in rows] == [1, 2]
    assert {r["kv"] for r in rows} == {"fp32"}   # the CPU engine stores K and V in the model's fp32
    assert label(rows[0]) == "torch fp32, KV fp32" and label(rows[0]) in bar.description

    box.children[0].children[2].value = 8        # KV int8: a second bar, rows say int8
    for toggle in box.batches:
        toggle.value = toggle.description == "1"
    box.run.click()
    assert len(box.progress.children) == 2 and rows[-1]["kv"] == "int8"
    box.clear.click()
    assert box.progress.children == ()


def test_no_batch_size_chosen_runs_nothing():
    box = benchmark_widget()
    for toggle in box.batches:
        toggle.value = False
    box.run.click()
    assert box.progress.children == () and not box.run.disabled
