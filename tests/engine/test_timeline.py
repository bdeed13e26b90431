"""The scheduler simulator and timeline drawing behind notebook 08 (no model involved)."""
import matplotlib

matplotlib.use("Agg")

import math  # noqa: E402

from labkit.engine.workload import chat_workload  # noqa: E402
from labkit.profile import timeline  # noqa: E402


def test_policies_finish_everything_and_only_static_pads():
    reqs = chat_workload(12, math.inf, timeline.SIM_SCALE, vocab=100, seed=3)
    static = timeline.simulate(reqs, "static", num_blocks=40, max_batch=4, token_budget=32)
    cont = timeline.simulate(reqs, "continuous", num_blocks=40, max_batch=4, token_budget=32)
    for sim in (static, cont):
        assert all(r.finished_at is not None and r.generated == r.max_tokens for r in sim.requests)
    s, c = static.summary(), cont.summary()
    assert s["useful_tokens"] == c["useful_tokens"] and c["padding_tokens"] == 0 < s["padding_tokens"]
    assert c["steps"] < s["steps"] and c["mean_latency_steps"] < s["mean_latency_steps"]
    # the token budget is never exceeded by the continuous policy
    assert all(sum(n for _, kind, n in step["work"] if kind != "padding") <= 32 for step in cont.steps)


def test_draw_takes_simulator_and_engine_records():
    from labkit.engine.engine import StepRecord

    reqs = chat_workload(5, 0.5, timeline.SIM_SCALE, vocab=100, seed=0)   # one request per 2 steps
    ax = timeline.draw(timeline.simulate(reqs, "continuous"))
    assert len(ax.patches) > 0
    records = [StepRecord(0, [("a", "prefill", 5)], [], [], 0.1, 1), StepRecord(1, [("a", "decode", 1)], ["b"], [], 0.1, 1)]
    ax = timeline.draw(records)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
