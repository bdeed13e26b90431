"""Exercise 08 (one continuous-batching step): solutions score full marks, stubs zero, typical
mistakes lose points, and an equivalent rewrite keeps full marks.

Kinds of mistake covered: every parameter (block_size, max_batch, token_budget varied in
fixed and seeded random states), contracts (first come first served; `computed` and
`generated` left to the engine), boundaries (a prompt that fills its blocks exactly, a
request needing exactly the free blocks, a full batch, an empty state)."""
import pytest

EXERCISE = "ex08_batching"


def test_solution_full_marks_and_stub_zero(g):
    g.assert_full_and_zero(EXERCISE)


@pytest.mark.parametrize("old, new, check, hint", [
    # prefills before decodes: a long prompt starves the requests that are answering
    ("        if not req.in_prefill and budget > 0:", "        if False:", "decodes_come_first", "before A"),
    # a whole prompt at once, ignoring the budget
    ("            n = min(req.prompt_len - req.computed, budget)", "            n = req.prompt_len - req.computed",
     "chunked_prefill_spends_the_budget", "chunks"),
    # first fit instead of first come: a small request overtakes a big one that does not fit
    ("    while waiting and len(running) < max_batch and budget > 0:   # 3. admissions\n"
     "        req = waiting[0]\n        need = -(-req.prompt_len // block_size)\n        if need > free_blocks:\n"
     "            break\n        waiting.pop(0)",
     "    for req in list(waiting):   # 3. admissions\n        if not (len(running) < max_batch and budget > 0):\n"
     "            break\n        need = -(-req.prompt_len // block_size)\n        if need > free_blocks:\n"
     "            continue\n        waiting.remove(req)",
     "admission_is_first_come_first_served", "overtake"),
    # blocks not taken on admission
    ("req.blocks, free_blocks = need, free_blocks - need", "req.blocks = need",
     "chunked_prefill_spends_the_budget", "3 blocks"),
    # the batch-size limit ignored
    ("while waiting and len(running) < max_batch and budget > 0:", "while waiting and budget > 0:",
     "admission_respects_batch_size_and_budget", "batch is full"),
    # one block too many for a prompt that fills its blocks exactly
    ("need = -(-req.prompt_len // block_size)", "need = req.prompt_len // block_size + 1",
     "exact_fits_are_admitted", "exactly 2 blocks"),
    # a request that needs exactly the free blocks refused
    ("        if need > free_blocks:\n            break", "        if need >= free_blocks:\n            break",
     "exact_fits_are_admitted", "exactly 2 are free"),
    # decodes past the budget
    ("        if not req.in_prefill and budget > 0:\n            plan.append((req.name, 1))",
     "        if not req.in_prefill:\n            plan.append((req.name, 1))",
     "admission_respects_batch_size_and_budget", "bounds decodes too"),
    # the batch limit off by one
    ("while waiting and len(running) < max_batch and budget > 0:",
     "while waiting and len(running) <= max_batch and budget > 0:", "exact_fits_are_admitted", "max_batch 1"),
    # the plan written into the requests: the engine would count the tokens twice
    ("            plan.append((req.name, n))\n            budget -= n\n",
     "            plan.append((req.name, n))\n            budget -= n\n            req.computed += n\n",
     "leaves_computed_and_generated_alone", "the engine's to update"),
    ("        plan.append((req.name, n))\n        budget -= n\n    return",
     "        plan.append((req.name, n))\n        budget -= n\n        req.computed += n\n    return",
     "leaves_computed_and_generated_alone", "the engine's to update"),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), check, hint)


def test_an_equivalent_rewrite_keeps_full_marks(tmp_path, g):
    """Stopping admission with a return instead of a break is the same plan: the checks are not brittle."""
    report = g.variant(EXERCISE, tmp_path, "        if need > free_blocks:\n            break\n        waiting.pop(0)",
                       "        if need > free_blocks:\n            return plan, free_blocks\n        waiting.pop(0)")
    assert report.score == report.max, g.failed(report)
