"""`labkit bench engine`: static, dynamic and multi-turn run end to end (embedded model, CPU,
tiny settings). The speeds are the benchmark's business; this checks what it reports."""
import json

from labkit.engine.bench import main


def test_bench_engine_all_modes(tmp_path, capsys):
    out = tmp_path / "engine.json"
    assert main(["--mode", "all", "--weights", "int4", "--batch-sizes", "1,2", "--no-hf", "--requests", "4",
                 "--turns", "3", "--input-len", "16", "--output-len", "4", "--json", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == result

    static = result["static"]
    assert [(r["server"], r["batch"]) for r in static] == [("labkit int4", 1), ("labkit int4", 2)]
    assert all(r["decode_ms_per_step"] > 0 and r["output_tok_s"] > 0 for r in static)

    dyn = result["dynamic"]
    assert dyn["workload"]["requests"] == 4 and dyn["workload"]["rate_req_s"] == 20.0   # the CPU's default
    assert [r["server"] for r in dyn["rows"]] == ["continuous", "static"]
    assert all(r["requests"] == 4 and r["req_per_s"] > 0 for r in dyn["rows"])

    with_cache, without = result["multi_turn"]["with_prefix_cache"], result["multi_turn"]["without"]
    assert len(with_cache["ttft_ms"]) == len(without["ttft_ms"]) == 3
    assert with_cache["final_history_tokens"] == without["final_history_tokens"]
    # turn 1 finds nothing of the conversation cached (the warm-up used other tokens); later
    # turns find at least the history up to the previous turn's prompt, in whole blocks
    assert with_cache["cached_tokens"][0] == 0 and without["cached_tokens"] == [0, 0, 0]
    system, user = 256, 64   # tokens at the CPU's length scale (0.25)
    assert all(c >= (system + t * user) // 16 * 16 for t, c in enumerate(with_cache["cached_tokens"][1:], 1))
    assert set(result["ratios"]) >= {"continuous / static request throughput",
                                     "multi-turn TTFT speedup from prefix caching (turns 2+)"}
