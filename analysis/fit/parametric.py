"""Chinchilla approach 3: fit L(N, D) = E + A / N^alpha + B / D^beta and its compute-optimal allocation.

Fitted on log-loss as log L = LSE(a - alpha log N, b - beta log D, e) with a Huber loss (delta 1e-3),
L-BFGS-B from the Epoch replication's grid of initialisations, and a case bootstrap (resampling points)
for percentile intervals. With C = 6 N D the loss-minimising split of a budget is

    N_opt = G (C/6)^a,  D_opt = (C/6)^b / G,  a = beta/(alpha+beta),  b = alpha/(alpha+beta),
    G = (alpha A / (beta B))^(1/(alpha+beta)).

For structured models N is the effective parameter count, training FLOPs per token / 6.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from analysis.fit.bootstrap import (DEFAULT_LEVEL, DEFAULT_REPLICATES, Interval, check_settings, percentile_interval,
                                resample_counts)
from analysis.errors import AnalysisError
from analysis.fit.robust_fit import HUBER_DELTA, at_bounds, fit_multistart, make_problem, solve_batched

PARAMS = ("E", "A", "B", "alpha", "beta")
# Epoch's initialisation grid (uncentred): alpha, beta in {0, .5, .., 2}, e in {-1, -.5, .., 1}, a, b in {0, 5, .., 25}.
_EXPONENTS = np.arange(0.0, 2.01, 0.5)
_LOG_E = np.arange(-1.0, 1.01, 0.5)
_LOG_AB = np.arange(0.0, 25.1, 5.0)
_EXPONENT_BOUNDS = (0.0, 10.0)
_FREE = (-200.0, 200.0)


def _model(theta: np.ndarray, xn: np.ndarray, xd: np.ndarray, jac: bool = True
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """log L and (optionally) its Jacobian for theta = (a, alpha, b, beta, e) on centred log N, log D."""
    a, alpha, b, beta, e = (theta[:, i:i + 1] for i in range(5))
    t1, t2 = a - alpha * xn, b - beta * xd
    top = np.maximum(np.maximum(t1, t2), e)
    e1, e2, e3 = np.exp(t1 - top), np.exp(t2 - top), np.exp(e - top)
    total = e1 + e2 + e3
    pred = top + np.log(total)
    if not jac:
        return pred, None
    out = np.empty(pred.shape + (5,))
    out[..., 0] = e1 / total
    out[..., 1] = -out[..., 0] * xn
    out[..., 2] = e2 / total
    out[..., 3] = -out[..., 2] * xd
    out[..., 4] = e3 / total
    return pred, out


@dataclass
class ParametricFit:
    """Approach-3 fit: parameters with intervals, the bootstrap replicates, and derived allocations."""

    params: dict[str, Interval]
    replicates: np.ndarray  # [R, 5] columns PARAMS
    n_points: int
    objective: float
    level: float = DEFAULT_LEVEL
    notes: list[str] = field(default_factory=list)
    at_bound: list[str] = field(default_factory=list)  # parameters of the point fit that sit on a bound

    @property
    def point(self) -> np.ndarray:
        return np.array([self.params[k].value for k in PARAMS])

    def predict(self, n: np.ndarray, d: np.ndarray) -> np.ndarray:
        E, A, B, alpha, beta = self.point
        return E + A / np.asarray(n, float) ** alpha + B / np.asarray(d, float) ** beta

    def optimal_allocation(self, flops: float) -> dict[str, Interval]:
        """N_opt and D_opt for a budget of `flops` training FLOPs (C = 6 N D), with bootstrap intervals."""
        n_pt, d_pt = _allocation(self.point[None, :], flops)
        n_rep, d_rep = _allocation(self.replicates, flops)
        return {"n_opt": percentile_interval(n_pt[0], n_rep, self.level),
                "d_opt": percentile_interval(d_pt[0], d_rep, self.level)}

    def to_dict(self) -> dict:
        return {"params": {k: v.to_dict() for k, v in self.params.items()}, "n_points": self.n_points,
                "objective": self.objective, "notes": self.notes,
                "at_bound": self.at_bound}


def _allocation(p: np.ndarray, flops: float) -> tuple[np.ndarray, np.ndarray]:
    E, A, B, alpha, beta = p.T
    with np.errstate(all="ignore"):
        g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
        n_opt = g * (flops / 6) ** (beta / (alpha + beta))
        return n_opt, flops / (6 * n_opt)


def _validate(n: np.ndarray, d: np.ndarray, loss: np.ndarray) -> None:
    if not (n.shape == d.shape == loss.shape) or n.ndim != 1:
        raise AnalysisError(f"parametric fit: params, tokens and loss must be 1-d and equally long; "
                            f"got shapes {n.shape}, {d.shape}, {loss.shape}")
    for name, arr in (("params", n), ("tokens", d), ("loss", loss)):
        bad = ~(np.isfinite(arr) & (arr > 0))
        if bad.any():
            raise AnalysisError(f"parametric fit: {bad.sum()} rows have a non-positive or non-finite {name} "
                                f"(first at row {int(np.flatnonzero(bad)[0])}); drop or fix those rows")
    if n.size < 8:
        raise AnalysisError(f"parametric fit: L(N, D) has 5 parameters and needs at least 8 runs; got {n.size}. "
                            "Add runs or use fit-frontier / isoflop instead")
    if np.unique(n).size < 3 or np.unique(d).size < 3:
        raise AnalysisError(f"parametric fit: needs at least 3 distinct params and 3 distinct token counts to "
                            f"separate A/N^alpha from B/D^beta; got {np.unique(n).size} and {np.unique(d).size}")


def fit_parametric(n: np.ndarray, d: np.ndarray, loss: np.ndarray, replicates: int = DEFAULT_REPLICATES,
                   seed: int = 0, level: float = DEFAULT_LEVEL, delta: float = HUBER_DELTA) -> ParametricFit:
    """Fit L(N, D) to runs with N parameters (effective), D training tokens and final loss L."""
    check_settings(replicates, level)
    n, d, loss = (np.asarray(x, dtype=float).ravel() for x in (n, d, loss))
    _validate(n, d, loss)
    ln, ld, y = np.log(n), np.log(d), np.log(loss)
    ln_ref, ld_ref = float(np.median(ln)), float(np.median(ld))
    xn, xd = ln - ln_ref, ld - ld_ref
    # E lies between 1e-4 of the lowest loss (no irreducible term resolved) and that loss itself.
    bounds = [_FREE, _EXPONENT_BOUNDS, _FREE, _EXPONENT_BOUNDS, (float(y.min()) + np.log(1e-4), float(y.min()))]
    problem = make_problem(_model, y, (xn, xd), bounds, delta=delta)

    grid = np.array([(a - al * ln_ref, al, b - be * ld_ref, be, e) for a, al, b, be, e
                     in itertools.product(_LOG_AB, _EXPONENTS, _LOG_AB, _EXPONENTS, _LOG_E)])
    theta, fval = fit_multistart(problem, grid)

    rng = np.random.default_rng(seed)
    counts = resample_counts(rng, n.size, replicates)
    boot = make_problem(_model, y, (xn, xd), bounds, w=counts, delta=delta)
    theta_rep, _ = solve_batched(boot, theta[None, :])

    def natural(t: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.column_stack([np.exp(t[:, 4]), np.exp(t[:, 0] + t[:, 1] * ln_ref),
                                    np.exp(t[:, 2] + t[:, 3] * ld_ref), t[:, 1], t[:, 3]])

    point, reps = natural(theta[None, :])[0], natural(theta_rep)
    params = {k: percentile_interval(point[i], reps[:, i], level) for i, k in enumerate(PARAMS)}
    with np.errstate(all="ignore"):
        for key, num in (("a", 4), ("b", 3)):  # a = beta/(alpha+beta), b = alpha/(alpha+beta)
            params[key] = percentile_interval(point[num] / (point[3] + point[4]),
                                              reps[:, num] / (reps[:, 3] + reps[:, 4]), level)
    bound_names = ("A", "alpha", "B", "beta", "E (bounds: 1e-4 and 1 x the lowest loss)")
    return ParametricFit(params, reps, int(n.size), fval, level, [], at_bounds(theta, bounds, bound_names))
