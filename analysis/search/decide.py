"""Who advances in a structure search: successive halving on scores with intervals, under a budget.

Pure: every function takes measured numbers and returns a decision, so the search logic is tested on synthetic
results. A score is an Interval (value, lo, hi), larger is better; the search scores a candidate by its loss
advantage over dense at the round's budget (search/driver.py). Two candidates cannot be told apart when their
intervals overlap.

Rule per round: rank the candidates by score; advance the top `keep` fraction (at least one) and every
candidate whose interval overlaps the best's (noise must not pick the winner). Before a round starts, the
candidates it cannot afford under the allowance are dropped, worst first; the search stops early when not even
the best can run. The winner set is the best at the last round measured plus every candidate tied with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from analysis.fit.bootstrap import Interval


@dataclass(frozen=True)
class Stage:
    """One round: its budget (training FLOPs of every run), the fraction kept after it, its number of seeds."""

    flops: float
    keep: float = 0.5
    seeds: int = 1


@dataclass
class RoundRecord:
    index: int
    flops: float
    candidates: list[str]  # who ran this round
    scores: dict[str, Interval]  # after this round, for the candidates that ran it
    cost: float  # training FLOPs of the round (baseline included)
    advanced: list[str] = field(default_factory=list)  # ranked best first; empty after the last round


@dataclass
class Trace:
    rounds: list[RoundRecord]
    winners: list[str]  # best first
    spent: float
    allowance: float
    reached_final: bool  # the last round (budget C) was run
    unaffordable: dict[int, list[str]] = field(default_factory=dict)  # round -> advanced, dropped for the allowance


Measure = Callable[[int, Stage, list[str]], Mapping[str, Interval]]
Cost = Callable[[Stage, int], float]  # (round, number of candidates) -> training FLOPs, baseline included


def _score(iv: Interval | None) -> float:
    return iv.value if iv is not None and math.isfinite(iv.value) else -math.inf


def ranked(scores: Mapping[str, Interval], labels: Sequence[str]) -> list[str]:
    """`labels` best first (an unmeasured or failed score ranks last; ties keep the given order)."""
    return sorted(labels, key=lambda lab: -_score(scores.get(lab)))


def tied_with_best(scores: Mapping[str, Interval], labels: Sequence[str]) -> list[str]:
    """The best of `labels` and every one whose interval overlaps the best's, best first."""
    order = ranked(scores, labels)
    if not order or _score(scores.get(order[0])) == -math.inf:
        return []
    best = scores[order[0]]
    return [order[0], *(lab for lab in order[1:] if _overlaps(scores.get(lab), best))]


def _overlaps(a: Interval | None, b: Interval) -> bool:
    return a is not None and all(map(math.isfinite, (a.lo, a.hi, b.lo, b.hi))) and a.hi >= b.lo and b.hi >= a.lo


def advance(scores: Mapping[str, Interval], labels: Sequence[str], keep: float) -> list[str]:
    """The top `keep` fraction of `labels` (at least one) plus every candidate tied with the best; best first."""
    order = ranked(scores, labels)
    top = set(order[:max(1, math.ceil(keep * len(order)))]) | set(tied_with_best(scores, labels))
    return [lab for lab in order if lab in top and _score(scores.get(lab)) > -math.inf]


def affordable(stage: Stage, order: Sequence[str], cost: Cost, left: float) -> tuple[list[str], list[str]]:
    """The longest head of `order` (best first) whose round fits in `left` FLOPs, and the rest."""
    n = len(order)
    while n and cost(stage, n) > left:
        n -= 1
    return list(order[:n]), list(order[n:])


def search(candidates: Sequence[str], stages: Sequence[Stage], measure: Measure, cost: Cost, allowance: float,
           spent: float = 0.0) -> Trace:
    """Run the rounds: measure the candidates alive, advance, stop at the last stage or when the allowance is
    spent. `spent`: FLOPs already used before the first round (the LR check)."""
    alive, rounds, unaffordable = list(candidates), [], {}
    for i, stage in enumerate(stages):
        alive, dropped = affordable(stage, alive, cost, allowance - spent)
        if dropped:
            unaffordable[i] = dropped
        if not alive:
            break
        c = cost(stage, len(alive))
        measured = dict(measure(i, stage, alive))
        spent += c
        rec = RoundRecord(i, stage.flops, alive, {lab: measured[lab] for lab in alive if lab in measured}, c)
        rounds.append(rec)
        if i < len(stages) - 1:
            rec.advanced = alive = advance(measured, alive, stage.keep)
    final = rounds[-1] if rounds else None
    winners = tied_with_best(final.scores, final.candidates) if final else []
    return Trace(rounds, winners, spent, allowance, bool(final) and final.index == len(stages) - 1, unaffordable)


def planned_cost(n: int, stages: Sequence[Stage], cost: Cost) -> list[float]:
    """Each round's FLOPs when exactly the `keep` fraction advances (no ties): the search's expected cost."""
    out = []
    for stage in stages:
        out.append(cost(stage, n))
        n = max(1, math.ceil(stage.keep * n))
    return out


def best_lr(losses: Mapping[float, float]) -> float | None:
    """The learning rate of the lowest finite final loss, or None when every run diverged."""
    finite = {lr: loss for lr, loss in losses.items() if loss is not None and math.isfinite(loss)}
    return min(finite, key=finite.get) if finite else None


def nearest(coords: Mapping[str, tuple[float, float, float] | None], measured: Sequence[str], label: str) -> str | None:
    """The measured label nearest `label` in (omega, psi, nu), or None when either has no coordinates."""
    here = coords.get(label)
    pool = [m for m in measured if coords.get(m) is not None]
    if here is None or not pool:
        return None
    return min(pool, key=lambda m: math.dist(here, coords[m]))
