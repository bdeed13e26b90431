"""`labkit.engine.workload.profile_decode` (behind `labkit bench engine --mode profile`): a decode
step's time, operator by operator (CPU here)."""
from labkit.engine import LLM
from labkit.engine.workload import profile_decode


def test_profile_names_the_operators_of_a_decode_step(tiny, tokenizer, h):
    llm = LLM(tiny, tokenizer=tokenizer, max_batch_size=1, num_blocks=32)
    prof = profile_decode(llm, list(range(100, 120)), steps=3, top=200)
    rows = prof["rows"]
    times = [r["us_per_step"] for r in rows]
    assert prof["unit"].startswith("CPU") and prof["steps"] == 3 and prof["wall_ms_per_step"] > 0
    assert times == sorted(times, reverse=True) and sum(times) <= prof["total_us_per_step"] + 0.1 * len(rows)
    names = {r["name"] for r in rows}
    # every layer's linear layers and its decode attention run once per step (2 layers, 3 steps)
    assert "aten::scaled_dot_product_attention" in names
    matmuls = [r for r in rows if r["name"] in ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul")]
    assert matmuls and max(r["calls_per_step"] for r in matmuls) >= 2
    h.assert_no_leaks(llm)   # the profiled request ran to its end and gave its blocks back
