"""`labkit bench prune`: the quality rows and targets, and the speed rows, on a tiny model."""
import pytest

from labkit.prune import bench


def test_targets_read_the_rows():
    rows = [{"kind": "dense", "method": "dense", "setting": "-", "ppl": 10.0},
            *({"kind": "oneshot", "method": m, "setting": s, "ppl": p} for m, s, p in [
                ("magnitude", "0.5", 30.0), ("wanda", "0.5", 14.0), ("sparsegpt", "0.5", 22.0),
                ("magnitude", "2:4", 50.0), ("wanda", "2:4", 25.0), ("sparsegpt", "2:4", 20.0),
                ("wanda", "0.1", 10.5), ("wanda", "0.2", 11.2)]),
            *({"kind": "layers", "method": m, "setting": "3 of 30", "ppl": p} for m, p in [
                ("influence", 15.0), ("ppl", 14.0), ("last", 40.0), ("random", 14.5)])]
    met = {t["target"].split(" (")[0]: t["met"] for t in bench.targets(rows)}
    assert met["wanda at 0.5 far below magnitude"] and not met["sparsegpt at 0.5 far below magnitude"]
    assert met["sparsegpt at 2:4 far below magnitude"] and met["sparsegpt beats wanda at 2:4"]
    assert not met["depth 3 of 30 layers: block influence beats the last and random layers"]
    wanda = next(t for t in bench.targets(rows) if t["target"].startswith("wanda: largest"))
    assert wanda["sparsity"] == 0.1  # 0.2 costs 12% and 0.5 costs 40%


@pytest.mark.slow
def test_quality_and_speed_rows_on_a_tiny_model(tiny_folder):
    from labkit.loading import load_model
    from labkit.quant.calib import calibration_ids

    model, tokenizer = load_model(str(tiny_folder))
    result = bench.quality(model, tokenizer, max_tokens=32, calib_samples=1, methods=("magnitude", "wanda"),
                           settings=(0.5, "2:4"), depth_ratios=(0.2,), widths=("one KV group fewer",))
    keys = [(r["kind"], r["method"], r["setting"]) for r in result["rows"]]
    assert keys == [("dense", "dense", "-"), ("oneshot", "magnitude", "0.5"), ("oneshot", "magnitude", "2:4"),
                    ("oneshot", "wanda", "0.5"), ("oneshot", "wanda", "2:4"),
                    *(("layers", m, "1 of 6") for m in ("influence", "ppl", "last", "random")),
                    ("width", "activation", "one KV group fewer")]
    dense = result["rows"][0]
    assert dense["kl"] == pytest.approx(0, abs=1e-9) and dense["top1"] == 1
    assert all(r["kl"] > 0 for r in result["rows"][1:])
    assert "magnitude: largest unstructured sparsity within +10% perplexity" in [t["target"] for t in result["targets"]]
    variants = bench.structured_variants(model, calibration_ids(tokenizer, None, 1, 512))
    rows = bench.speed(variants, tokenizer, tokenizer.encode("a prompt of a few tokens"), output_len=3, rounds=1,
                       compile=False)
    assert [r["variant"] for r in rows] == list(variants) and rows[0]["vs_dense"] == 1
    assert rows[1]["parameters"] < rows[0]["parameters"] and rows[2]["parameters"] < rows[0]["parameters"]
    assert "| layers -20% |" in bench.speed_table(rows)
