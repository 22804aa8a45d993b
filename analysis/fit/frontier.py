"""Chinchilla approach 1: the loss frontier, the lower envelope of loss vs training FLOPs, and L(C) fitted to it.

Envelope: every run's evaluation curve is interpolated (linear in log C, log L) at the centres of a common grid
of log C, `per_decade` bins a decade (raw points are never candidates: a run's own evaluation times would
favour whichever run happens to be evaluated at a given C). Runs that differ only in their seed (a `config`
column) are averaged in log-loss per bin, over bins every seed covers, so the envelope is a minimum over
configurations' seed means, not over seeds. Only then are bins below the floor dropped (filtering raw rows
first would cut a curve that straddles the floor and leave its first bins to sparsely evaluated runs). Each
bin keeps the lowest configuration, and a bin is kept only if its loss is below every bin at smaller C (the
envelope decreases).

Fit: L(C) = E + A C^(-alpha), on log-loss as log L = logaddexp(a - alpha log C, e), Huber (delta 1e-3),
a multi-start solve from the best of a grid of (alpha, E) starts.

Intervals come from a seed-noise bootstrap: each replicate shifts every configuration's curve by its own
N(0, sigma^2 / (2 seeds)) offset in log-loss (sigma from repeated seeds, else from the fit's residuals;
sigma^2 / seeds is the noise of a mean over `seeds` runs), rebuilds the envelope and refits. The observed
curves already carry one draw of that noise and the envelope is a minimum over configurations, not a smooth
statistic (the bootstrap's known weak spot): on tests/analysis/fit/test_coverage.py's sweeps (40 draws, 200
replicates) offsets of sigma / sqrt(seeds) made the replicate exponents spread 1.56x wider than the
exponent across draws (coverage 1.00 at 95%, 0.90 at 80%); sigma / sqrt(2 seeds) gives 1.14x (0.925, 0.85).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.fit.bootstrap import DEFAULT_LEVEL, DEFAULT_REPLICATES, Interval, check_settings, percentile_interval
from analysis.errors import AnalysisError
from analysis.fit.noise import SeedNoise
from analysis.fit.robust_fit import HUBER_DELTA, at_bounds, fit_multistart_batched, make_problem, solve_batched

PARAMS = ("E", "A", "alpha")
DEFAULT_PER_DECADE = 8
_ALPHAS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.6, 1.0)
_E_FRACTIONS = (0.01, 0.25, 0.5, 0.75, 0.9, 0.97)
_MIN_POINTS = 5


def _model(theta: np.ndarray, x: np.ndarray, jac: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """log L = logaddexp(a - alpha x, e) and (optionally) its Jacobian; theta = (a, alpha, e), x = centred log C."""
    a, alpha, e = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
    diff = a - alpha * x - e
    soft = np.log1p(np.exp(-np.abs(diff)))
    pred = e + np.maximum(diff, 0) + soft  # logaddexp(a - alpha x, e)
    if not jac:
        return pred, None
    out = np.empty(pred.shape + (3,))
    out[..., 0] = np.exp(np.minimum(diff, 0) - soft)  # weight of the power-law term: 1 / (1 + exp(-diff))
    out[..., 1] = -out[..., 0] * x
    out[..., 2] = 1 - out[..., 0]
    return pred, out


@dataclass
class EnvelopeGrid:
    """Per configuration and log-C bin, the seed-mean log-loss there and its log C (inf / nan where absent)."""

    log_loss: np.ndarray  # [configs, bins]
    log_flops: np.ndarray  # [configs, bins]
    run_ids: np.ndarray  # [configs]: the first run of each configuration
    seeds: np.ndarray  # [configs]: runs averaged into each configuration


def _run_grid(curves: pd.DataFrame, per_decade: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every run's log-loss at the common bin centres (linear in log C, log L; inside its own range only) and
    log C there, [runs, bins], with the sorted run ids. A run with a single evaluation enters at that point's
    own C, in its nearest bin."""
    codes, run_ids = pd.factorize(curves["run_id"], sort=True)
    lc_all = np.log10(curves["flops"].to_numpy(float))
    ll_all = np.log(curves["loss"].to_numpy(float))
    lo, hi = np.floor(lc_all.min() * per_decade), np.ceil(lc_all.max() * per_decade)
    centres = np.arange(lo, hi + 1) / per_decade
    log_loss = np.full((len(run_ids), centres.size), np.inf)
    log_flops = np.full((len(run_ids), centres.size), np.nan)
    order = np.lexsort((lc_all, codes))
    codes, lc_all, ll_all = codes[order], lc_all[order], ll_all[order]
    cuts = np.flatnonzero(np.diff(codes)) + 1
    for j, lc, ll in zip(codes[np.r_[0, cuts]], np.split(lc_all, cuts), np.split(ll_all, cuts)):
        if lc[0] == lc[-1]:
            b = int(np.rint(lc[0] * per_decade - lo))
            log_loss[j, b], log_flops[j, b] = ll.min(), lc[0]
            continue
        inside = slice(np.searchsorted(centres, lc[0]), np.searchsorted(centres, lc[-1], side="right"))
        log_loss[j, inside] = np.interp(centres[inside], lc, ll)
        log_flops[j, inside] = centres[inside]
    return log_loss, log_flops * np.log(10), np.asarray(run_ids)


def envelope_grid(curves: pd.DataFrame, per_decade: int = DEFAULT_PER_DECADE) -> EnvelopeGrid:
    """Bin every run's curve (columns run_id, flops, loss[, config]) and average the seeds of each config.

    Runs sharing `config` (all but the seed; absent: every run is its own) are averaged in log-loss per bin,
    only in bins every one of them covers: log L_g(c) = mean_i log L_gi(c)."""
    log_loss, log_flops, run_ids = _run_grid(curves, per_decade)
    config = curves.groupby("run_id")["config"].first() if "config" in curves.columns else pd.Series(run_ids, run_ids)
    codes, _ = pd.factorize(config.reindex(run_ids).to_numpy(), sort=False)
    groups = np.bincount(codes)
    every = np.zeros((groups.size, log_loss.shape[1]), dtype=int)
    np.add.at(every, codes, np.isfinite(log_loss).astype(int))
    covered = every == groups[:, None]
    sums_l, sums_c = np.zeros(every.shape), np.zeros(every.shape)
    np.add.at(sums_l, codes, np.where(np.isfinite(log_loss), log_loss, 0.0))
    np.add.at(sums_c, codes, np.nan_to_num(log_flops))
    first = np.unique(codes, return_index=True)[1]  # codes number configs in order of first appearance
    return EnvelopeGrid(np.where(covered, sums_l / groups[:, None], np.inf),
                        np.where(covered, sums_c / groups[:, None], np.nan), run_ids[first], groups)


def resolved_floor(curves: pd.DataFrame, sizes: pd.Series, per_decade: int = DEFAULT_PER_DECADE) -> float | None:
    """For curves valid at every point (constant LR): the smallest C from which on the lower envelope is held by runs
    larger than the smallest size (the bin after the last one a smallest-size run holds). Below it the smallest
    model wins, so a smaller one might do better and the frontier is not resolved there. `sizes`: run_id -> size
    (N_eff). None when a smallest-size run holds the envelope at the largest C."""
    grid = envelope_grid(curves, per_decade)
    finite = np.flatnonzero(np.isfinite(grid.log_loss).any(axis=0))
    best = np.argmin(grid.log_loss, axis=0)
    size = sizes.reindex(grid.run_ids).to_numpy(float)
    smallest = finite[size[best[finite]] == size.min()]
    start = finite[0] if smallest.size == 0 else smallest[-1] + 1
    if start > finite[-1]:
        return None
    return float(np.exp(grid.log_flops[best[start], start]))


def lower_envelope(log_loss: np.ndarray, log_flops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Envelope of one or many replicates ([..., runs, bins]): returns log C, log L, kept mask, each [..., bins]."""
    best = np.argmin(log_loss, axis=-2)
    env_l = np.take_along_axis(log_loss, best[..., None, :], axis=-2)[..., 0, :]
    env_c = np.take_along_axis(log_flops, best[..., None, :], axis=-2)[..., 0, :]
    prior_min = np.minimum.accumulate(np.concatenate(
        [np.full(env_l.shape[:-1] + (1,), np.inf), env_l[..., :-1]], axis=-1), axis=-1)
    kept = np.isfinite(env_l) & (env_l < prior_min)
    return np.where(kept, env_c, 0.0), np.where(kept, env_l, 0.0), kept


@dataclass
class FrontierFit:
    """L(C) = E + A C^-alpha fitted to the loss frontier, with bootstrap replicates."""

    params: dict[str, Interval]
    replicates: np.ndarray  # [R, 3] columns PARAMS
    envelope: pd.DataFrame  # flops, loss, run_id of the envelope points
    noise: SeedNoise
    objective: float
    level: float = DEFAULT_LEVEL
    notes: list[str] = field(default_factory=list)
    at_bound: list[str] = field(default_factory=list)  # parameters of the point fit that sit on a bound

    @property
    def point(self) -> np.ndarray:
        return np.array([self.params[k].value for k in PARAMS])

    @staticmethod
    def _law(p: np.ndarray, flops: np.ndarray) -> np.ndarray:
        E, A, alpha = (p[:, i:i + 1] for i in range(3))
        with np.errstate(all="ignore"):
            return E + A * np.asarray(flops, float)[None, :] ** -alpha

    def predict(self, flops: np.ndarray | float) -> np.ndarray:
        return self._law(self.point[None, :], np.atleast_1d(flops))[0]

    def replicate_predictions(self, flops: np.ndarray | float) -> np.ndarray:
        return self._law(self.replicates, np.atleast_1d(flops))

    def predict_interval(self, flops: float) -> Interval:
        return percentile_interval(float(self.predict(flops)[0]), self.replicate_predictions(flops)[:, 0], self.level)

    def to_dict(self) -> dict:
        return {"params": {k: v.to_dict() for k, v in self.params.items()}, "envelope_points": len(self.envelope),
                "noise": {"sigma": self.noise.sigma, "source": self.noise.source}, "notes": self.notes,
                "at_bound": self.at_bound}


def _grid(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    l_min, l_ref = np.exp(y.min()), np.exp(np.median(y))
    starts = []
    for alpha, frac in itertools.product(_ALPHAS, _E_FRACTIONS):
        e = frac * l_min
        starts.append((np.log(max(l_ref - e, 1e-3 * l_ref)), alpha, np.log(e)))
    return np.array(starts)


def _check_curves(curves: pd.DataFrame) -> None:
    missing = {"run_id", "flops", "loss"} - set(curves.columns)
    if missing:
        raise AnalysisError(f"frontier: curves need columns run_id, flops, loss; missing {sorted(missing)}")
    bad = ~(np.isfinite(curves[["flops", "loss"]].to_numpy(float)) & (curves[["flops", "loss"]].to_numpy(float) > 0))
    if bad.any():
        raise AnalysisError(f"frontier: {int(bad.any(axis=1).sum())} rows have non-positive or non-finite flops "
                            "or loss; drop them before fitting")


def smallest_final_flops(curves: pd.DataFrame) -> float:
    """The smallest of the runs' final FLOPs: where the envelope starts unless a lower floor is given."""
    return float(curves.groupby("run_id")["flops"].max().min())


def fit_frontier(curves: pd.DataFrame, noise: SeedNoise | None = None, replicates: int = DEFAULT_REPLICATES,
                 seed: int = 0, level: float = DEFAULT_LEVEL, per_decade: int = DEFAULT_PER_DECADE,
                 delta: float = HUBER_DELTA, floor: float | None = None) -> FrontierFit:
    """Envelope + L(C) fit of curves (columns run_id, flops, loss); `noise` None estimates it from residuals.

    The envelope starts at the smallest run's final FLOPs (below it only partly trained runs exist, all too large
    for that compute), or lower, at `floor` (resolved_floor, for runs whose whole curves are valid reads)."""
    check_settings(replicates, level)
    _check_curves(curves)
    smallest_final = smallest_final_flops(curves)
    floor = smallest_final if floor is None else min(floor, smallest_final)
    grid = envelope_grid(curves, per_decade)
    below = ~(grid.log_flops >= np.log(floor) - 1e-9)  # whole curves are binned first; the floor drops bins
    grid.log_loss[below], grid.log_flops[below] = np.inf, np.nan
    env_c, env_l, kept = lower_envelope(grid.log_loss, grid.log_flops)
    if kept.sum() < _MIN_POINTS:
        decades = np.ptp(np.log10(curves["flops"].to_numpy(float)))
        raise AnalysisError(f"frontier: the envelope has {int(kept.sum())} points (needs {_MIN_POINTS}); the runs "
                            f"span {decades:.2f} decades of FLOPs. Add runs at more budgets (about 1.5 decades)")
    x_ref = float(np.median(env_c[kept]))
    x, y = env_c[kept] - x_ref, env_l[kept]
    # E lies between 1e-4 of the lowest envelope loss (practically a pure power law) and that loss itself.
    bounds = [(-200.0, 200.0), (0.0, 10.0), (float(y.min()) + np.log(1e-4), float(y.min()))]
    theta, fval = fit_multistart_batched(make_problem(_model, y, (x,), bounds, delta=delta), _grid(x, y))

    notes = []
    if noise is None:
        pred, _ = _model(theta[None, :], x[None, :])
        resid = y - pred[0]
        noise = SeedNoise(float(1.4826 * np.median(np.abs(resid - np.median(resid)))), 0,
                          "envelope residuals (no repeated seeds)")
        notes.append("seed noise estimated from the envelope residuals: no configs with repeated seeds")
    rng = np.random.default_rng(seed)
    rep_c = np.empty((replicates, env_c.size))
    rep_l, rep_w = np.empty_like(rep_c), np.empty_like(rep_c)
    chunk = max(1, int(2e7 // grid.log_loss.size))
    # a config's seed mean carries noise sigma / sqrt(seeds), calibrated by 1 / sqrt(2) (see above) [configs, 1]
    run_sigma = (noise.log_sigma(np.exp(grid.log_loss.min(axis=1))) / np.sqrt(2 * grid.seeds))[:, None]
    for start in range(0, replicates, chunk):
        stop = min(replicates, start + chunk)
        offsets = rng.normal(0.0, 1.0, (stop - start, grid.log_loss.shape[0], 1)) * run_sigma
        c, losses, k = lower_envelope(grid.log_loss[None] + offsets, np.broadcast_to(grid.log_flops, offsets.shape[:1]
                                                                                     + grid.log_flops.shape))
        rep_c[start:stop], rep_l[start:stop], rep_w[start:stop] = c - x_ref, losses, k
    boot = make_problem(_model, rep_l, (rep_c,), bounds, w=rep_w, delta=delta)
    theta_rep, _ = solve_batched(boot, theta[None, :])

    def natural(t: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.column_stack([np.exp(t[:, 2]), np.exp(t[:, 0] + t[:, 1] * x_ref), t[:, 1]])

    point, reps = natural(theta[None, :])[0], natural(theta_rep)
    params = {k: percentile_interval(point[i], reps[:, i], level) for i, k in enumerate(PARAMS)}
    best = np.argmin(grid.log_loss, axis=0)
    env = pd.DataFrame({"flops": np.exp(env_c[kept]), "loss": np.exp(env_l[kept]),
                        "run_id": grid.run_ids[best[kept]]})
    bound_names = ("A", "alpha", "E (bounds: 1e-4 and 1 x the lowest envelope loss)")
    return FrontierFit(params, reps, env, noise, fval, level, notes, at_bounds(theta, bounds, bound_names))
