"""Bootstrap helpers shared by every fit: seeded resampling weights and percentile intervals.

A nonparametric bootstrap resample of n points is the same as refitting all n points with multinomial
counts as weights, so every replicate shares one design and replicates can be solved together as a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.errors import AnalysisError

DEFAULT_REPLICATES = 1000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided percentile interval at `level`."""

    value: float
    lo: float
    hi: float
    level: float = DEFAULT_LEVEL
    dropped: float = 0.0  # fraction of bootstrap replicates left out as invalid (e.g. a multiplier of 0)

    def contains(self, x: float) -> bool:
        return bool(self.lo <= x <= self.hi)

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "lo": self.lo, "hi": self.hi, "level": self.level, "dropped": self.dropped}

    def fmt(self, spec: str = ".3g") -> str:
        """`0.341 [0.302, 0.377]`; a missing interval prints as the bare value."""
        if not np.isfinite(self.lo) or not np.isfinite(self.hi):
            return f"{self.value:{spec}}"
        return f"{self.value:{spec}} [{self.lo:{spec}}, {self.hi:{spec}}]"


def check_settings(replicates: int, level: float) -> None:
    """Reject bootstrap settings that cannot give an interval."""
    if replicates < 10:
        raise AnalysisError(f"replicates={replicates}: percentile intervals need at least 10 bootstrap replicates "
                            "(the default is 1000)", "replicates")
    if not 0 < level < 1:
        raise AnalysisError(f"level={level}: the interval level must lie strictly between 0 and 1, e.g. 0.95",
                            "level")


def resample_counts(rng: np.random.Generator, n: int, replicates: int) -> np.ndarray:
    """Multinomial counts [replicates, n]: replicate r draws point i counts[r, i] times."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=replicates).astype(float)


def percentile_interval(value: float, samples: np.ndarray, level: float = DEFAULT_LEVEL) -> Interval:
    """Percentile interval of the finite bootstrap samples around `value` (nan bounds if none are finite)."""
    finite = np.asarray(samples, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return Interval(float(value), float("nan"), float("nan"), level)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return Interval(float(value), float(lo), float(hi), level)
