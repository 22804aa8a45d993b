"""Learning-rate transfer: the optimal LR per width for each structure and parametrization, and its drift.

An LR sweep is a group of runs that differ only in lr (and seed): same experiment, label, parametrization,
width, depth and token budget, with 3 or more learning rates. Per group the mean log-loss over seeds is taken
per lr; lr* is the vertex of the parabola through the best lr and its two neighbours in (log lr, log L),
kept between those neighbours. A best lr at the end of the sweep is reported as such (lr* is then a bound).
Drift is the least-squares slope of log2 lr* against log2 width: lr* changes by 2^slope per width doubling,
and a parametrization that transfers has a slope near 0. Per structure swept under both parametrizations, the
comparison says whether structure-aware drifts clearly less than naive: by more than CLEAR_SLOPE in |slope|
(about one step of a factor-2 LR grid across the width range, the resolution of lr*).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GROUP_COLS = ("experiment", "label", "parametrization", "width", "depth", "tokens_target")
DRIFT_COLS = ("experiment", "label", "parametrization")
CLEAR_SLOPE = 0.3


def optimal_lr(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, bool]:
    """(lr*, at_edge) from losses per distinct lr (sorted or not); parabola vertex in log lr, log L."""
    order = np.argsort(lrs)
    x, y = np.log(lrs[order]), np.log(losses[order])
    i = int(np.argmin(y))
    if i == 0 or i == len(x) - 1:
        return float(np.exp(x[i])), True
    xs, ys = x[i - 1:i + 2], y[i - 1:i + 2]
    c2, c1, _ = np.polyfit(xs, ys, 2)
    vertex = -c1 / (2 * c2) if c2 > 0 else x[i]
    return float(np.exp(np.clip(vertex, xs[0], xs[-1]))), False


def lr_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean final loss per lr (geometric mean over seeds) of every LR sweep: GROUP_COLS, lr, loss."""
    df = runs.assign(log_loss=np.log(runs["final_val_loss"].to_numpy(float)))
    per_lr = df.groupby(list(GROUP_COLS) + ["lr"], dropna=False, sort=True)["log_loss"].mean().reset_index()
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
        slope = float(np.polyfit(x, y, 1)[0])
        rows.append({**dict(zip(DRIFT_COLS, key)), "widths": len(per_width), "slope": slope,
                     "factor_per_doubling": 2.0 ** slope, "lr_star_min": float(per_width.min()),
                     "lr_star_max": float(per_width.max()), "any_at_edge": bool(g["at_edge"].any())})
    return pd.DataFrame(rows, columns=list(DRIFT_COLS) + ["widths", "slope", "factor_per_doubling", "lr_star_min",
                                                          "lr_star_max", "any_at_edge"])


def transfer_comparison(drift: pd.DataFrame, structure_of: dict[str, str]) -> pd.DataFrame:
    """Per (experiment, structure) with both structure_aware and naive drift rows: their slopes and the verdict."""
    df = drift.assign(structure=drift["label"].map(structure_of))
    rows = []
    for (experiment, structure), g in df.groupby(["experiment", "structure"]):
        by = {r.parametrization: r for r in g.itertuples()}
        if not {"structure_aware", "naive"} <= set(by):
            continue
        aware, naive = abs(by["structure_aware"].slope), abs(by["naive"].slope)
        rows.append({"experiment": experiment, "structure": structure, "slope_structure_aware":
                     by["structure_aware"].slope, "slope_naive": by["naive"].slope,
                     "clearly_less": bool(aware < naive - CLEAR_SLOPE)})
    return pd.DataFrame(rows, columns=["experiment", "structure", "slope_structure_aware", "slope_naive",
                                       "clearly_less"])
