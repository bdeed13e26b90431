"""The two dashboards, built and driven without a browser."""
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

from labkit.profile import cost, memory_planner, roofline_explorer  # noqa: E402
from labkit.profile.configs import PRESETS  # noqa: E402
from labkit.profile.widgets import PNG_DPI, CSS_DPI  # noqa: E402

PNG = b"\x89PNG"


def png_size(data: bytes) -> tuple[int, int]:
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.parametrize("build", [memory_planner, roofline_explorer])
def test_charts_are_sharp_and_fit_beside_the_controls(build):
    """Drawn at twice the displayed size, shown at that size (never stretched), beside the controls."""
    w = build()
    width, height = png_size(bytes(w.chart.value))
    shown = int(w.chart.layout.width.removesuffix("px"))
    assert PNG_DPI == 2 * CSS_DPI and width == 2 * shown
    assert shown <= 640 and height / 2 <= 400        # with 440 px of controls: one row in a 1216 px output area
    row = w.children[0]
    assert w.chart in row.children and "wrap" in row.layout.flex_flow


def test_memory_planner_defaults_and_changes():
    w = memory_planner()
    assert bytes(w.chart.value).startswith(PNG)
    assert w.plan.weights == cost.param_bytes(PRESETS["Llama-2-7B"], 16)
    assert w.plan.fits and "fits" in w.summary.value
    first_chart = w.chart.value

    w.model_choice.value = "Llama-2-70B"              # 138 GB of fp16 weights on an 80 GB H100
    assert not w.plan.fits
    assert "does not fit" in w.summary.value
    assert w.max_batch == 0
    assert w.chart.value != first_chart

    w.weight_format.value = "int4 g128"               # 36.6 GB
    assert w.plan.weights == pytest.approx(cost.param_bytes(PRESETS["Llama-2-70B"], 4.25))
    assert w.plan.fits

    w.device.value = "L4"
    assert not w.plan.fits
    w.device.value = "H200"
    w.kv_format.value = "int8 / fp8"
    w.batch.value = 64
    w.context.value = 8192
    assert w.plan.kv_cache == cost.kv_cache_bytes(PRESETS["Llama-2-70B"], 64, 8192, 8)
    assert w.plan.capacity == pytest.approx(141e9 * 0.9)
    assert w.max_batch == cost.max_batch(PRESETS["Llama-2-70B"], 8192, 141, 4.25, 8)


def test_memory_planner_embedded_on_this_machine():
    w = memory_planner(model="embedded (SmolLM2-135M)", device="T4", batch=1, context=2048)
    assert w.plan.gb()["weights"] == pytest.approx(0.269, abs=0.001)
    assert w.plan.fits
    w.device.value = "this machine (measured)"
    assert w.plan.capacity > 0


def test_roofline_explorer():
    w = roofline_explorer()
    assert bytes(w.chart.value).startswith(PNG)
    assert w.point.batch == 1 and w.point.bound == "memory"
    assert "memory-bound" in w.summary.value
    assert w.critical is None  # Llama-2-7B at 1024 tokens: the MHA KV cache never lets it reach the ridge

    w.model_choice.value = "Llama-3-8B"
    w.context.value = 128
    assert w.critical is not None and f"batch {w.critical} reaches the ridge" in w.summary.value
    w.batch.value = 512
    assert w.point.bound == "compute"
    w.device.value = "T4"                             # ridge ~203: reached at a smaller batch than the H100's 295
    crit_t4 = w.critical
    w.device.value = "H100 SXM"
    assert crit_t4 < w.critical

    w.batch.value = 8
    before = w.point.intensity
    w.weight_format.value = "int4 g128"
    assert w.point.intensity > 3 * before


def test_timeline_explorer_labels_have_room():
    """Slider names are shown in full (~8 px per character at JupyterLab's 13 px font)."""
    from labkit.profile import timeline

    sliders = timeline.explorer().children[:-1]
    assert {s.description for s in sliders} >= {"token_budget", "num_blocks", "arrival_gap", "max_batch"}
    for s in sliders:
        assert 8 * len(s.description) <= int(s.style.description_width.removesuffix("px")), s.description
