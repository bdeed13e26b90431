"""Checks for exercise 08: one step of a continuous-batching scheduler."""
from __future__ import annotations

import copy
import random

from labkit.grading import check
from labkit.profile.timeline import continuous_step as _reference


def _req(impl, name, prompt, computed=0, generated=0, blocks=0, max_tokens=8):
    return impl.Request(name, prompt, max_tokens, computed, generated, blocks)


def _call(impl, running, waiting, free, bs=16, max_batch=8, budget=64):
    out = impl.schedule_step(running, waiting, free, bs, max_batch, budget)
    assert isinstance(out, tuple) and len(out) == 2, "schedule_step returns (plan, free_blocks)"
    plan, left = out
    assert isinstance(plan, list) and all(isinstance(p, tuple) and len(p) == 2 for p in plan), (
        "the plan is a list of (name, tokens) pairs")
    return plan, left


@check(points=2)
def decodes_come_first(impl):
    a = _req(impl, "A", 100, computed=20, blocks=7)        # prefilling
    b = _req(impl, "B", 10, computed=12, generated=3, blocks=1)
    c = _req(impl, "C", 30, computed=30, generated=1, blocks=2)
    plan, left = _call(impl, [a, b, c], [], 0, budget=10)
    got = dict(plan)
    assert got.get("B") == 1 and got.get("C") == 1, (
        f"B and C are decoding and must each run 1 token before A's prompt takes the budget; plan {plan}")
    assert got.get("A") == 8, f"A's prompt gets what is left of the budget (10 - 2 decodes = 8); plan {plan}"
    assert [n for n, _ in plan[:2]] == ["B", "C"], f"decodes come first in the plan; plan {plan}"


@check(points=2)
def chunked_prefill_spends_the_budget(impl):
    a = _req(impl, "A", 100, computed=30, blocks=7)
    plan, _ = _call(impl, [a], [], 0, budget=16)
    assert plan == [("A", 16)], f"a long prompt runs in chunks of at most the budget: expected [('A', 16)], got {plan}"
    a.computed = 94
    w = _req(impl, "W", 40)
    plan, left = _call(impl, [a], [w], 10, budget=16)
    assert plan == [("A", 6), ("W", 10)], (
        f"A finishes its prompt (6 tokens), the 10 left start W's prompt: expected [('A', 6), ('W', 10)], got {plan}")
    assert left == 7 and w.blocks == 3, f"W takes ceil(40 / 16) = 3 blocks: free 10 -> 7, got free {left}, W.blocks {w.blocks}"


@check(points=3)
def admission_is_first_come_first_served(impl):
    x, y = _req(impl, "X", 70), _req(impl, "Y", 10)        # X needs 5 blocks, Y needs 1
    running, waiting = [], [x, y]
    plan, left = _call(impl, running, waiting, 3)
    assert plan == [] and left == 3, (
        f"X is first in line and needs 5 blocks, only 3 are free: nobody joins (Y may not overtake X); got {plan}")
    assert waiting == [x, y] and running == [], "requests that do not join stay in `waiting`, in order"
    plan, left = _call(impl, running, waiting, 6)
    assert plan == [("X", 64)], f"X joins and takes the whole budget of 64 (then none is left for Y); got {plan}"
    assert running == [x] and x.blocks == 5 and left == 1, (
        f"X moves to `running` holding 5 blocks (free 6 -> 1); got running {[r.name for r in running]}, free {left}")


@check(points=2)
def admission_respects_batch_size_and_budget(impl):
    running = [_req(impl, f"R{i}", 8, computed=8, generated=1, blocks=1) for i in range(4)]
    waiting = [_req(impl, "W", 8)]
    plan, left = _call(impl, running, waiting, 50, max_batch=4)
    assert "W" not in dict(plan) and len(waiting) == 1, "the batch is full (max_batch 4): W waits"
    plan, left = _call(impl, running, waiting, 50, max_batch=8, budget=4)
    assert "W" not in dict(plan) and left == 50, "the 4 decodes spent the whole budget: W waits, its blocks stay free"
    plan, left = _call(impl, running, waiting, 50, max_batch=8, budget=2)
    assert plan == [("R0", 1), ("R1", 1)], (
        f"a budget of 2 tokens runs 2 of the 4 decodes (R0 and R1, in order); the budget bounds decodes too, got {plan}")


@check(points=2)
def exact_fits_are_admitted(impl):
    """Boundaries: a prompt that fills its blocks exactly, a request that needs exactly the free
    blocks, a prompt exactly the budget, a batch that reaches max_batch exactly."""
    x = _req(impl, "X", 32)                                  # 32 / 16: exactly 2 blocks, not 3
    running, waiting = [], [x]
    plan, left = _call(impl, running, waiting, 2, budget=32, max_batch=1)
    assert plan == [("X", 32)] and left == 0 and x.blocks == 2, (
        f"X's 32-token prompt fills exactly 2 blocks of 16, and exactly 2 are free: it joins and takes them "
        f"(ceil(32 / 16) = 2). Expected [('X', 32)] with 0 blocks left, got {plan} with {left} left, X.blocks {x.blocks}")
    y = _req(impl, "Y", 1)
    plan, left = _call(impl, running, [y], 5, budget=40, max_batch=1)
    assert plan == [("X", 32)] and left == 5, (
        f"max_batch 1 is reached by X alone: Y waits; X's prompt runs again in full (the engine has not "
        f"updated `computed` yet). Expected [('X', 32)], 5 blocks left; got {plan}, {left}")
    plan, left = _call(impl, [], [], 7)
    assert plan == [] and left == 7, f"nothing running and nothing waiting: an empty plan, blocks untouched; got {plan}, {left}"


@check(points=1)
def leaves_computed_and_generated_alone(impl):
    a = _req(impl, "A", 50, computed=10, blocks=4)
    b = _req(impl, "B", 8, computed=9, generated=1, blocks=1)
    w = _req(impl, "W", 20)
    _call(impl, [a, b], [w], 10, budget=60)   # B decodes, A finishes its prompt, W joins
    got = [(r.name, r.computed, r.generated) for r in (a, b, w)]
    assert got == [("A", 10, 0), ("B", 9, 1), ("W", 0, 0)], (
        f"schedule_step only plans: `computed` and `generated` are the engine's to update after the step runs "
        f"(expected [('A', 10, 0), ('B', 9, 1), ('W', 0, 0)], got {got})")


@check(points=3)
def matches_the_reference_on_random_states(impl):
    rng = random.Random(0)
    for trial in range(40):
        bs, max_batch, budget = rng.choice([4, 16]), rng.randint(1, 6), rng.randint(1, 80)
        running = []
        for i in range(rng.randint(0, 4)):
            prompt = rng.randint(1, 90)
            computed = rng.choice([rng.randint(0, prompt - 1), prompt + rng.randint(0, 5)]) if prompt > 1 else prompt
            running.append(_req(impl, f"R{i}", prompt, computed, max(0, computed - prompt), -(-prompt // bs)))
        waiting = [_req(impl, f"W{i}", rng.randint(1, 90)) for i in range(rng.randint(0, 4))]
        free = rng.randint(0, 30)
        r1, w1 = copy.deepcopy(running), copy.deepcopy(waiting)
        want, want_free = _reference(r1, w1, free, bs, max_batch, budget)
        got, got_free = _call(impl, running, waiting, free, bs, max_batch, budget)
        state = lambda rs: [(r.name, r.blocks) for r in rs]  # noqa: E731
        assert (got, got_free) == (want, want_free), (
            f"state {trial}: block_size {bs}, max_batch {max_batch}, budget {budget}, free {free}: "
            f"expected plan {want} (free {want_free}), got {got} (free {got_free})")
        assert state(running) == state(r1) and state(waiting) == state(w1), f"state {trial}: running/waiting differ"
