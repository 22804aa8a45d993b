"""Learning-rate transfer: the optimal LR per width for each structure and parametrization, and its drift.

An LR sweep is a group of runs that differ only in lr (and seed): same experiment, label, parametrization,
width, depth and token budget, with 3 or more learning rates. Per group the mean log-loss over seeds is taken
per lr; lr* is the vertex of the parabola through the best lr and its two neighbours in (log lr, log L),
kept between those neighbours. A best lr at the end of the sweep is reported as such (lr* is then a bound).
Drift is the least-squares slope of log2 lr* against log2 width: lr* changes by 2^slope per width doubling,
and a parametrization that transfers has a slope near 0.

Per structure swept under both parametrizations, the comparison asks whether structure-aware drifts less than
naive: gap g = |slope_naive| - |slope_structure_aware|, with a parametric bootstrap interval. Each mean log-loss
per (sweep, lr) is moved by normal noise of std sigma / sqrt(seeds), sigma the seed noise of log L (measured
from repeated seeds, analysis.fit.inputs.seed_noise, or given as a loss std); lr* and both slopes are
recomputed per replicate. "reproduced": the interval lies above 0; "not reproduced": below 0; else "not
resolved". P(g > CLEAR_SLOPE) says how likely structure-aware drifts clearly less (about one step of a
factor-2 LR grid across the width range, the resolution of lr*). Without a noise level nothing is tested.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.fit.bootstrap import DEFAULT_LEVEL, DEFAULT_REPLICATES, percentile_interval
from analysis.fit.inputs import seed_noise
from analysis.fit.noise import SeedNoise

GROUP_COLS = ("experiment", "label", "parametrization", "width", "depth", "tokens_target")
DRIFT_COLS = ("experiment", "label", "parametrization")
CLEAR_SLOPE = 0.3
NOT_TESTED = "no noise level: not tested"
TRANSFER_COLS = ("experiment", "structure", "slope_structure_aware", "slope_naive", "gap", "gap_lo", "gap_hi",
                 "level", "p_clear", "verdict", "noise", "sigma", "replicates")


def _log_lr_star(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of y [rows, len(x)] (x = log lr ascending, y = log L): log lr* and whether it is the sweep's edge."""
    i = np.argmin(y, axis=1)
    edge = (i == 0) | (i == len(x) - 1)
    j, rows = np.clip(i, 1, len(x) - 2), np.arange(len(y))
    x0, x1, x2 = x[j - 1], x[j], x[j + 1]
    d0, d2 = y[rows, j] - y[rows, j - 1], y[rows, j] - y[rows, j + 1]
    den = (x1 - x0) * d2 - (x1 - x2) * d0  # < 0 when the parabola curves up (flat: 0)
    curved = den < 0
    vertex = x1 - 0.5 * ((x1 - x0) ** 2 * d2 - (x1 - x2) ** 2 * d0) / np.where(curved, den, -1.0)
    inner = np.clip(np.where(curved, vertex, x1), x0, x2)
    return np.where(edge, x[i], inner), edge


def _slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of each row of y [rows, len(x)] against x."""
    xc = x - x.mean()
    return (y - y.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)


def optimal_lr(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, bool]:
    """(lr*, at_edge) from losses per distinct lr (sorted or not); parabola vertex in log lr, log L."""
    order = np.argsort(lrs)
    star, edge = _log_lr_star(np.log(lrs[order]), np.log(losses[order])[None])
    return float(np.exp(star[0])), bool(edge[0])


def lr_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean final loss per lr (geometric mean over seeds) of every LR sweep: GROUP_COLS, lr, loss, seeds."""
    df = runs.assign(log_loss=np.log(runs["final_val_loss"].to_numpy(float)))
    per_lr = df.groupby(list(GROUP_COLS) + ["lr"], dropna=False, sort=True)["log_loss"].agg(["mean", "size"])
    per_lr = per_lr.reset_index().rename(columns={"mean": "log_loss", "size": "seeds"})
    n_lrs = per_lr.groupby(list(GROUP_COLS), dropna=False)["lr"].transform("size").to_numpy()
    swept = per_lr[n_lrs >= 3]
    return swept.assign(loss=np.exp(swept["log_loss"].to_numpy())).drop(columns="log_loss")


def lr_sweeps(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per LR sweep: lr*, whether it sits at the sweep's edge, the lrs tried and the best loss."""
    rows = []
    for key, g in lr_curves(runs).groupby(list(GROUP_COLS), dropna=False):
        lrs, losses = g["lr"].to_numpy(float), g["loss"].to_numpy(float)
        lr_star, edge = optimal_lr(lrs, losses)
        rows.append({**dict(zip(GROUP_COLS, key)), "lr_star": lr_star, "at_edge": edge, "lrs": len(g),
                     "lr_min": float(lrs.min()), "lr_max": float(lrs.max()), "best_loss": float(losses.min())})
    return pd.DataFrame(rows, columns=list(GROUP_COLS) + ["lr_star", "at_edge", "lrs", "lr_min", "lr_max",
                                                          "best_loss"])


def lr_drift(sweeps: pd.DataFrame) -> pd.DataFrame:
    """Per structure and parametrization: slope of log2 lr* vs log2 width and the lr* range across widths."""
    rows = []
    for key, g in sweeps.groupby(list(DRIFT_COLS)):
        per_width = g.groupby("width")["lr_star"].apply(lambda s: float(np.exp(np.log(s).mean())))
        if len(per_width) < 2:
            continue
        x, y = np.log2(per_width.index.to_numpy(float)), np.log2(per_width.to_numpy(float))
        slope = float(_slopes(x, y[None])[0])
        rows.append({**dict(zip(DRIFT_COLS, key)), "widths": len(per_width), "slope": slope,
                     "factor_per_doubling": 2.0 ** slope, "lr_star_min": float(per_width.min()),
                     "lr_star_max": float(per_width.max()), "any_at_edge": bool(g["at_edge"].any())})
    return pd.DataFrame(rows, columns=list(DRIFT_COLS) + ["widths", "slope", "factor_per_doubling", "lr_star_min",
                                                          "lr_star_max", "any_at_edge"])


def _slope_replicates(curves: pd.DataFrame, noise: SeedNoise, rng: np.random.Generator,
                      replicates: int) -> np.ndarray:
    """Bootstrap drift slopes [replicates] of one label's LR sweeps (lr_curves rows): mean log-losses moved by
    normal noise of std sigma / sqrt(seeds), lr* per sweep, geometric mean per width, slope as in lr_drift."""
    per_width: dict[float, list[np.ndarray]] = {}
    for _, g in curves.groupby(list(GROUP_COLS), dropna=False):
        loss = g["loss"].to_numpy(float)
        sd = noise.log_sigma(loss) / np.sqrt(g["seeds"].to_numpy(float))
        y = np.log(loss) + rng.normal(size=(replicates, len(g))) * sd
        per_width.setdefault(float(g["width"].iloc[0]), []).append(_log_lr_star(np.log(g["lr"].to_numpy(float)),
                                                                                y)[0])
    widths = sorted(per_width)
    stars = np.stack([np.mean(per_width[w], axis=0) for w in widths], axis=1) / np.log(2)
    return _slopes(np.log2(widths), stars)


def _described(noise: SeedNoise | None) -> str | None:
    """The noise level for the report, with its unit: `given: loss std 0.002` or `log-loss std 0.011 from ...`."""
    if noise is None or noise.absolute:
        return None if noise is None else noise.source
    return f"log-loss std {noise.sigma:.3g} from {noise.source}"


def transfer_comparison(runs: pd.DataFrame, structure_of: dict[str, str], given: SeedNoise | None = None,
                        replicates: int = DEFAULT_REPLICATES, seed: int = 0, level: float = DEFAULT_LEVEL,
                        drift: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (experiment, structure) with both structure_aware and naive drift: the point slopes, the gap
    |slope_naive| - |slope_structure_aware| with its bootstrap interval, P(gap > CLEAR_SLOPE) and the verdict.

    The noise is `given` (e.g. --loss-noise) or measured from `runs`' repeated seeds; with neither, the verdict is
    NOT_TESTED and the interval and probability are nan. `drift` is lr_drift(lr_sweeps(runs)) where the caller has
    it already."""
    noise = given or seed_noise(runs)
    curves = lr_curves(runs)
    drift = lr_drift(lr_sweeps(runs)) if drift is None else drift
    drift = drift.assign(structure=drift["label"].map(structure_of))
    rng = np.random.default_rng(seed)
    rows = []
    for (experiment, structure), g in drift.groupby(["experiment", "structure"]):
        by = {r.parametrization: r for r in g.itertuples()}
        if not {"structure_aware", "naive"} <= set(by):
            continue
        aware, naive = by["structure_aware"], by["naive"]
        gap = abs(naive.slope) - abs(aware.slope)
        lo = hi = p_clear = float("nan")
        verdict = NOT_TESTED
        if noise is not None:
            reps = {}
            for r in (aware, naive):
                mine = curves[(curves["experiment"] == experiment) & (curves["label"] == r.label)
                              & (curves["parametrization"] == r.parametrization)]
                reps[r.parametrization] = _slope_replicates(mine, noise, rng, replicates)
            gaps = np.abs(reps["naive"]) - np.abs(reps["structure_aware"])
            iv = percentile_interval(gap, gaps, level)
            lo, hi, p_clear = iv.lo, iv.hi, float(np.mean(gaps > CLEAR_SLOPE))
            verdict = "reproduced" if lo > 0 else "not reproduced" if hi < 0 else "not resolved"
        rows.append({"experiment": experiment, "structure": structure, "slope_structure_aware": aware.slope,
                     "slope_naive": naive.slope, "gap": gap, "gap_lo": lo, "gap_hi": hi, "level": level,
                     "p_clear": p_clear, "verdict": verdict, "noise": _described(noise),
                     "sigma": float("nan") if noise is None else noise.sigma, "replicates": replicates})
    return pd.DataFrame(rows, columns=list(TRANSFER_COLS))
