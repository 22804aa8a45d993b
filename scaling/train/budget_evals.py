"""Evaluations at the sweep's budgets, so the analysis reads every run's curve exactly at each budget it passes.

A run of a sweep evaluates, besides its log-spaced points, at every final FLOP budget of its own variant's runs
that it passes (`train.eval_flops`, set at expansion). Where it evaluates does not change what it computes, so
`eval_flops` is not part of the run's identity.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from scaling.train.plan import RunPlan

SAME_BUDGET = 1.1  # finals within 10% of a run's own are its own budget (the analysis's budget tolerance)


def budget_steps(eval_flops: Iterable[float], plan: RunPlan) -> list[int]:
    """Optimiser steps at which the run has trained (closest to) each budget it reaches."""
    per_step = plan.units_per_step * plan.train_flops_per_unit
    steps = {max(1, round(float(c) / per_step)) for c in eval_flops}
    return sorted(s for s in steps if s <= plan.steps)


def attach_eval_budgets(runs: Sequence, read_budgets: Iterable[float] = ()) -> None:
    """Set `train.eval_flops` of each planned run to the final budgets of its variant's other runs below its own
    (more than 10% below: closer ones are its own budget, rounded to other step sizes),
    and to the `read_budgets` below its own (a sweep whose runs are read off their curves, `from_curves`)."""
    read_budgets = [float(c) for c in read_budgets]
    finals: dict[str, set[float]] = {}
    for run in runs:
        finals.setdefault(str(run.cfg.label), set()).add(float(run.plan.train_flops))
    for run in runs:
        own = float(run.plan.train_flops)
        below = {c for c in (*finals[str(run.cfg.label)], *read_budgets) if c * SAME_BUDGET < own}
        run.cfg.train.eval_flops = sorted(below)
