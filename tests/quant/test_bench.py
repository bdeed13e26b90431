"""`labkit bench quant` runs every row (on a tiny model here) and reports the targets."""
import json

from labkit.cli import main


def test_bench_quant_json(capsys, tiny_folder):
    code = main(["bench", "quant", "--model", str(tiny_folder), "--max-tokens", "48", "--calib-samples", "1", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    keys = [r["key"] for r in result["rows"]]
    assert keys[0] == "float" and len(keys) == 10 and result["tokens"] == 48
    rows = {r["key"]: r for r in result["rows"]}
    assert rows["float"]["kl"] == 0 and all(r["kl"] > 0 for k, r in rows.items() if k != "float")
    assert rows["kv8"]["kv_bytes_per_token"] < rows["float"]["kv_bytes_per_token"] / 1.5
    assert rows["w4_g128"]["weight_bytes"] < rows["w8_g128"]["weight_bytes"] < rows["float"]["weight_bytes"]
    assert {t["target"] for t in result["targets"]} >= {"KV int8 KL <= 0.002", "W8 KL <= 0.002, top-1 >= 97%"}


def test_unknown_row_is_one_line(capsys):
    assert main(["bench", "quant", "--rows", "w5"]) == 2
    assert "unknown rows" in capsys.readouterr().err
