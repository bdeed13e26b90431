"""Scheduler timelines: which request runs what in which step, as a chart and an explorer.

Two sources of steps, one drawing:

- `simulate(...)`: a small simulator with no model in it. Requests have known prompt and
  answer lengths and arrival steps (`labkit.engine.workload.chat_workload`'s requests, their
  arrival times read as steps, or `SimRequest`s); a policy plans each step (`continuous`, `static`, or any
  function with the signature of exercise 08's `schedule_step`). It shows what a scheduler
  decides, not how long a step takes.
- an engine's own record: `LLM(..., record_timeline=True)` keeps one `StepRecord` per step
  (`llm.timeline`), the same picture for real requests.

`draw(steps)` colours each (request, step) cell: prefill, decode, padding (a static batch's
finished rows, computed for nothing), waiting, preempted. `explorer()` puts sliders on the
simulator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from labkit.engine.workload import Req, chat_workload

COLORS = {"waiting": "#f3e6b3", "prefill": "#4c72b0", "decode": "#55a868", "padding": "#b0b0b0",
          "preempted": "#c44e52"}
SIM_SCALE = 0.12     # chat_workload's lengths for the simulator: ~20-token prompts and answers, short runs to draw


@dataclass
class SimRequest:
    """A request of the simulator; the fields a policy reads are those of exercise 08's `Request`."""
    name: str
    prompt_len: int
    max_tokens: int
    arrival: int = 0          # step at which it shows up
    computed: int = 0
    generated: int = 0
    blocks: int = 0
    finished_at: int | None = None
    first_token_at: int | None = None

    @property
    def in_prefill(self) -> bool:
        return self.computed < self.prompt_len


@dataclass
class Steps:
    """What `simulate` returns: one dict per step and the requests' final state."""
    steps: list[dict] = field(default_factory=list)     # {"step", "work": [(name, kind, n)], "waiting": [names]}
    requests: list[SimRequest] = field(default_factory=list)

    def summary(self) -> dict:
        useful = sum(n for s in self.steps for _, kind, n in s["work"] if kind != "padding")
        padding = sum(n for s in self.steps for _, kind, n in s["work"] if kind == "padding")
        done = [r for r in self.requests if r.finished_at is not None]
        return {"steps": len(self.steps), "finished": len(done), "useful_tokens": useful, "padding_tokens": padding,
                "mean_latency_steps": round(sum(r.finished_at - r.arrival + 1 for r in done) / max(1, len(done)), 1),
                "mean_ttft_steps": round(sum(r.first_token_at - r.arrival + 1 for r in done) / max(1, len(done)), 1),
                "requests_per_step": round(len(done) / max(1, len(self.steps)), 3)}


def sim_request(i: int, r: SimRequest | Req) -> SimRequest:
    """A fresh simulator request: a copy of a `SimRequest`, or the lengths of a workload's `Req`
    named `r{i}`, its arrival time read as a step."""
    if isinstance(r, Req):
        return SimRequest(f"r{i}", len(r.prompt), r.output_len, int(r.arrival))
    return SimRequest(r.name, r.prompt_len, r.max_tokens, r.arrival)


def continuous_step(running, waiting, free_blocks, block_size, max_batch, token_budget):
    """The continuous policy (exercise 08's answer, and its grader's reference): decodes, then
    prefill chunks, then first-come admissions. Reads only the fields of exercise 08's `Request`
    (name, prompt_len, computed, blocks), so it plans for a learner's requests as for the simulator's."""
    plan, budget = [], token_budget
    for r in running:
        if r.computed >= r.prompt_len and budget > 0:
            plan.append((r.name, 1))
            budget -= 1
    for r in running:
        if r.computed < r.prompt_len and budget > 0:
            plan.append((r.name, min(r.prompt_len - r.computed, budget)))
            budget -= plan[-1][1]
    while waiting and len(running) < max_batch and budget > 0:
        r = waiting[0]
        need = -(-r.prompt_len // block_size)
        if need > free_blocks:
            break
        waiting.pop(0)
        r.blocks, free_blocks = need, free_blocks - need
        running.append(r)
        plan.append((r.name, min(r.prompt_len, budget)))
        budget -= plan[-1][1]
    return plan, free_blocks


def simulate(requests: list[SimRequest] | list[Req], policy: str | Callable = "continuous", num_blocks: int = 64,
             block_size: int = 16, max_batch: int = 8, token_budget: int = 64, max_steps: int = 2000) -> Steps:
    """Run a policy over copies of `requests` until all are done (or `max_steps`).

    After each step the simulator does what the engine does: planned tokens enter the cache,
    a request that has computed its whole prompt samples a token each step, and a request that
    reached `max_tokens` leaves and frees its blocks. Under `static`, a batch is admitted only
    when the previous one is over, reserves blocks for prompt and answer, runs its prompts in
    one step, and keeps finished rows as padding until its longest request is done.
    """
    reqs = [sim_request(i, r) for i, r in enumerate(requests)]
    by_name = {r.name: r for r in reqs}
    pending = sorted(reqs, key=lambda r: r.arrival)
    waiting: list[SimRequest] = []
    running: list[SimRequest] = []
    padding: list[SimRequest] = []
    free, out = num_blocks, Steps(requests=reqs)
    step_fn = continuous_step if policy == "continuous" else policy
    for step in range(max_steps):
        while pending and pending[0].arrival <= step:
            waiting.append(pending.pop(0))
        if not (pending or waiting or running):
            break
        if policy == "static":
            if not running:
                free += sum(r.blocks for r in padding)
                padding = []
                while waiting and len(running) < max_batch:
                    need = -(-(waiting[0].prompt_len + waiting[0].max_tokens) // block_size)
                    if need > free:
                        break
                    r = waiting.pop(0)
                    r.blocks, free = need, free - need
                    running.append(r)
            plan = [(r.name, r.prompt_len - r.computed if r.in_prefill else 1) for r in running]
        else:
            plan, free = step_fn(running, waiting, free, block_size, max_batch, token_budget)
        work = [(name, "prefill" if by_name[name].in_prefill else "decode", n) for name, n in plan if n > 0]
        work += [(r.name, "padding", 1) for r in padding]
        out.steps.append({"step": step, "work": work, "waiting": [r.name for r in waiting]})
        for name, n in plan:
            r = by_name[name]
            r.computed += n
            if not r.in_prefill:            # the prompt is in: every step samples one token
                r.generated += 1
                r.first_token_at = step if r.first_token_at is None else r.first_token_at
                if r.generated >= r.max_tokens:
                    r.finished_at = step
                    running.remove(r)
                    if policy == "static":
                        padding.append(r)
                    else:
                        free += r.blocks
    return out


def _cells(steps) -> tuple[list[str], list[tuple[int, str, str]]]:
    """(request names in order of appearance, [(step, name, kind)]) from simulator dicts or engine StepRecords."""
    names, cells = [], []
    for s in steps:
        if isinstance(s, dict):
            step, work, waiting, preempted = s["step"], s["work"], s.get("waiting", []), []
        else:
            step, work, waiting, preempted = s.step, s.work, [], s.preempted
        for name, kind, _ in work:
            cells.append((step, name, kind))
        cells += [(step, name, "waiting") for name in waiting]
        cells += [(step, name, "preempted") for name in preempted]
        for name in [w[0] for w in work] + list(waiting) + list(preempted):
            if name not in names:
                names.append(name)
    return names, cells


def draw(steps, ax=None, title: str | None = None, max_requests: int = 60):
    """The timeline chart: one row per request, one column per step."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names, cells = _cells(steps.steps if isinstance(steps, Steps) else steps)
    names = names[:max_requests]
    row = {n: i for i, n in enumerate(names)}
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 0.22 * len(names) + 1.5))
    for step, name, kind in cells:
        if name in row:
            ax.add_patch(plt.Rectangle((step, row[name]), 1, 0.9, color=COLORS[kind], lw=0))
    ax.set_xlim(0, max((c[0] for c in cells), default=0) + 1)
    ax.set_ylim(len(names), 0)
    ax.set_yticks([i + 0.45 for i in range(len(names))], names, fontsize=7)
    ax.set_xlabel("step")
    ax.legend(handles=[Patch(color=c, label=k) for k, c in COLORS.items()], ncol=5, fontsize=8,
              loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    if title:
        ax.set_title(title, pad=22)
    return ax


def compare(requests: list[SimRequest] | list[Req], policies=("static", "continuous"), **options) -> dict:
    """Simulate each policy on the same requests and draw them one above the other, on one step axis."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(policies), 1, figsize=(11, 0.24 * len(requests) * len(policies) + 2.5),
                             layout="constrained")
    results = {}
    for ax, policy in zip(axes, policies):
        sim = simulate(requests, policy, **options)
        s = results[policy if isinstance(policy, str) else getattr(policy, "__name__", "policy")] = sim.summary()
        draw(sim, ax, f"{policy if isinstance(policy, str) else 'yours'}: {s['steps']} steps, "
                      f"{s['padding_tokens']} padding tokens, mean latency {s['mean_latency_steps']} steps")
    right = max(ax.get_xlim()[1] for ax in axes)
    for ax in axes:
        ax.set_xlim(0, right)
    return results


def explorer(requests: int = 16, seed: int = 0):
    """Sliders over the simulator: both policies on the same requests, side by side."""
    import ipywidgets as W
    import matplotlib.pyplot as plt

    def show(n=requests, max_batch=6, token_budget=48, num_blocks=40, arrival_gap=0.0, spread=1.0, seed=seed):
        rate = 1 / arrival_gap if arrival_gap > 0 else math.inf     # requests per step
        reqs = chat_workload(n, rate, SIM_SCALE, vocab=100, seed=seed, spread=spread)   # token ids unused here
        compare(reqs, num_blocks=num_blocks, max_batch=max_batch, token_budget=token_budget)
        plt.show()

    wide = {"style": {"description_width": "110px"}, "layout": W.Layout(width="440px")}   # "token_budget" in full
    return W.interactive(show, n=W.IntSlider(requests, 2, 40, **wide), max_batch=W.IntSlider(6, 1, 16, **wide),
                         token_budget=W.IntSlider(48, 8, 256, 8, **wide), num_blocks=W.IntSlider(40, 8, 200, 4, **wide),
                         arrival_gap=W.FloatSlider(0.0, min=0, max=10, step=0.5, **wide),
                         spread=W.FloatSlider(1.0, min=0.1, max=1.5, step=0.1, **wide),
                         seed=W.IntSlider(seed, 0, 20, **wide))
