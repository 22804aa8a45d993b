"""Fit diagnostics: a status per fit, ok / weak / failed, with the reasons, so a report cites only fits it can trust.

    failed  no fit could be made, a parameter of the point fit sits on a bound (the number is the bound, not an
            estimate), or a headline interval has no finite bootstrap replicate; its numbers are not shown
    weak    a headline interval spans more than `max_factor` (hi / lo) or reaches 0, misses its own point
            estimate, has zero width or has the point estimate on one of its ends (a degenerate bootstrap:
            replicates piled on one value or a bound), fewer than MIN_POINTS_PER_PARAM points per fitted
            parameter, or a held-out budget fell outside its prediction interval (failed extrapolation; a
            holdout whose interval is wider than INFORMATIVE_FACTOR is uninformative: neither inside nor
            outside, and no check); numbers are shown, not cited
    ok      none of the above

Headline quantities: alpha of the loss frontier (E trades off against A and is rarely pinned down; only E at
a bound fails the fit), a of the isoFLOP law, alpha, beta and a of the parametric law. A compute multiplier
inherits the worse status of the two frontiers it compares and is judged on its own interval, more strictly:
ok only if 0 < lo <= m <= hi and hi / lo <= MULTIPLIER_MAX_FACTOR; it fails if its point estimate is 0 (the
structure never reaches dense's loss) or more than the interval's tail, (1 - level) / 2, of its bootstrap
replicates are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from analysis.fit.bootstrap import Interval
from analysis.fit.frontier import FrontierFit
from analysis.fit.isoflop import IsoflopFit
from analysis.fit.parametric import ParametricFit

DEFAULT_MAX_FACTOR = 3.0
MULTIPLIER_MAX_FACTOR = 2.5  # hi / lo of a compute multiplier's interval that can still be cited
INFORMATIVE_FACTOR = 2.5  # hi / lo of a holdout's prediction interval beyond which the check says nothing
_ZERO_WIDTH = 1e-6  # relative: an interval narrower than this, or a point this close to an end, is degenerate
MIN_POINTS_PER_PARAM = 2.0
STATUSES = ("ok", "weak", "failed")


@dataclass(frozen=True)
class FitStatus:
    """A fit's status and why."""

    status: str
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def text(self) -> str:
        """`ok`, or `weak: reason; reason`."""
        return self.status if not self.reasons else f"{self.status}: {'; '.join(self.reasons)}"

    def to_dict(self) -> dict:
        return {"status": self.status, "reasons": list(self.reasons)}


def _judge(failed: Iterable[str], weak: Iterable[str]) -> FitStatus:
    failed, weak = list(failed), list(weak)
    if failed:
        return FitStatus("failed", tuple(failed + weak))
    return FitStatus("weak", tuple(weak)) if weak else FitStatus("ok")


def worst(named: dict[str, FitStatus]) -> FitStatus:
    """The worst of the named statuses (e.g. the two frontiers a multiplier compares), naming the ones not ok."""
    rank = max(STATUSES.index(s.status) for s in named.values())
    return FitStatus(STATUSES[rank], tuple(f"{name} is {s.status}" for name, s in named.items() if not s.ok))


def failed(reason: str) -> FitStatus:
    return FitStatus("failed", (reason,))


def _intervals(named: dict[str, Interval], max_factor: float) -> tuple[list[str], list[str]]:
    """(failed, weak) reasons of headline intervals: none finite, missing the point, zero width, the point on an end,
    reaching 0 or spanning > max_factor."""
    bad, wide = [], []
    for name, iv in named.items():
        tol = _ZERO_WIDTH * max(abs(iv.lo), abs(iv.hi))
        if not (np.isfinite(iv.lo) and np.isfinite(iv.hi) and np.isfinite(iv.value)):
            bad.append(f"{name} has no finite bootstrap interval")
        elif not iv.contains(iv.value):
            wide.append(f"{name} = {iv.value:.3g} lies outside its interval [{iv.lo:.3g}, {iv.hi:.3g}] (a degenerate "
                        "bootstrap: too few points or too little noise to resample)")
        elif iv.hi - iv.lo <= tol:
            wide.append(f"{name} interval [{iv.lo:.3g}, {iv.hi:.3g}] has zero width (a degenerate bootstrap: every "
                        "replicate gave the same value)")
        elif min(iv.value - iv.lo, iv.hi - iv.value) <= tol:
            wide.append(f"{name} = {iv.value:.3g} sits on an end of its interval [{iv.lo:.3g}, {iv.hi:.3g}] "
                        "(replicates piled on one value or a bound)")
        elif iv.lo <= 0 or iv.hi / iv.lo > max_factor:
            span = "reaches 0 or below" if iv.lo <= 0 else f"spans {iv.hi / iv.lo:.3g}x"
            wide.append(f"{name} interval [{iv.lo:.3g}, {iv.hi:.3g}] {span} (more than {max_factor:g}x)")
    return bad, wide


def informative(iv: Interval) -> bool:
    """A prediction interval narrow enough to test a held-out value: finite, 0 < lo, hi / lo <= INFORMATIVE_FACTOR."""
    return bool(np.isfinite(iv.lo) and np.isfinite(iv.hi) and iv.lo > 0 and iv.hi / iv.lo <= INFORMATIVE_FACTOR)


NEVER_REACHES = "never reach dense's loss (multiplier 0 or undefined"
NOT_CONVERGED = "did not converge (their fit stopped short"


def multiplier_status(iv: Interval, frontiers: dict[str, FitStatus], dropped_means: str = NEVER_REACHES) -> FitStatus:
    """A compute multiplier's status: the worse of the `frontiers` it compares (named; none for a pooled fit's
    multiplier, which has no fits of its own to inherit from) and of its own interval. `dropped_means` says why
    the replicates counted in `iv.dropped` were left out; more than the interval's tail fails it."""
    bad, wide = _intervals({"multiplier": iv}, MULTIPLIER_MAX_FACTOR)
    if iv.value == 0:
        bad.append("multiplier = 0: the structure's fit never reaches dense's loss")
    tail = (1 - iv.level) / 2
    if iv.dropped > tail:
        consequence = "the interval's lower end is 0" if dropped_means == NEVER_REACHES else "the interval is unsure"
        bad.append(f"{iv.dropped:.1%} of bootstrap replicates {dropped_means}; more than the {tail:.1%} tail): "
                   f"{consequence}")
    own, inherited = _judge(bad, wide), worst(frontiers) if frontiers else FitStatus("ok")
    rank = max(STATUSES.index(own.status), STATUSES.index(inherited.status))
    return FitStatus(STATUSES[rank], inherited.reasons + own.reasons)


def _points(n: int, params: int, what: str) -> list[str]:
    if n < MIN_POINTS_PER_PARAM * params:
        return [f"{n} {what} for {params} parameters (fewer than {MIN_POINTS_PER_PARAM:g} per parameter)"]
    return []


def _extrapolation(holdout: pd.DataFrame, fit: str) -> list[str]:
    if holdout.empty:
        return []
    checked = holdout[(holdout["fit"] == fit) & holdout["inside"].notna()]
    missed = checked[~checked["inside"].astype(bool)]
    return [f"failed extrapolation: with {r.held_out} budget(s) held out, C = {r.flops:.3g} observed "
            f"{r.observed:.4g} outside [{r.lo:.4g}, {r.hi:.4g}]" for r in missed.itertuples()]


def frontier_status(fit: FrontierFit, holdout: pd.DataFrame, max_factor: float = DEFAULT_MAX_FACTOR) -> FitStatus:
    bad, wide = _intervals({"alpha": fit.params["alpha"]}, max_factor)
    weak = wide + _points(len(fit.envelope), 3, "envelope points") + _extrapolation(holdout, "frontier")
    return _judge(fit.at_bound + bad, weak)


def isoflop_status(fit: IsoflopFit, holdout: pd.DataFrame, max_factor: float = DEFAULT_MAX_FACTOR) -> FitStatus:
    bad, wide = _intervals({"a": fit.a}, max_factor)
    used = int(fit.budgets["used"].sum())
    weak = wide + _points(used, 2, "budgets with an interior optimum") + _extrapolation(holdout, "isoflop")
    return _judge(bad, weak)


def parametric_status(fit: ParametricFit, max_factor: float = DEFAULT_MAX_FACTOR) -> FitStatus:
    bad, wide = _intervals({k: fit.params[k] for k in ("alpha", "beta", "a")}, max_factor)
    return _judge(fit.at_bound + bad, wide + _points(fit.n_points, 5, "runs"))
