"""Structures against dense, and Einsum exponents against the taxonomy coordinates.

Compute multiplier at matched loss: at budget C dense reaches L_d(C); the structure reaches that loss at
C_s = (A_s / (L_d(C) - E_s))^(1/alpha_s), so it needs m(C) = C / C_s times less compute (m > 1: the
structure is cheaper; m = 0 when L_d(C) <= E_s, a loss the structure never reaches). The bootstraps of the
two fits are independent, so replicate i of one is paired with replicate i of the other for intervals. A
replicate whose multiplier is 0 or not finite has no multiplier: it is left out of the interval and counted
(Interval.dropped, the fraction; analysis.fit.diagnostics fails a multiplier that loses too many).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from analysis.fit.bootstrap import Interval, percentile_interval
from analysis.fit.frontier import FrontierFit


def _multiplier(struct: np.ndarray, dense_loss: np.ndarray, flops: float) -> np.ndarray:
    E, A, alpha = struct[:, 0], struct[:, 1], struct[:, 2]
    gap = dense_loss - E
    with np.errstate(all="ignore"):
        c_s = np.where(gap > 0, (A / np.where(gap > 0, gap, 1.0)) ** (1 / alpha), np.inf)
        return flops / c_s


def compute_multiplier(struct: FrontierFit, dense: FrontierFit, flops: float) -> Interval:
    """How many times less compute `struct` needs to match dense's loss at `flops` (with interval)."""
    n = min(len(struct.replicates), len(dense.replicates))
    point = _multiplier(struct.point[None, :], dense.predict(flops), flops)[0]
    reps = _multiplier(struct.replicates[:n], dense.replicate_predictions(flops)[:n, 0], flops)
    valid = np.isfinite(reps) & (reps > 0)
    iv = percentile_interval(float(point), reps[valid], struct.level)
    return replace(iv, dropped=float(1 - valid.mean()))


def exponent_difference(struct: FrontierFit, dense: FrontierFit) -> Interval:
    """alpha_structure - alpha_dense of the loss frontiers (positive: the structure improves faster)."""
    n = min(len(struct.replicates), len(dense.replicates))
    return percentile_interval(struct.params["alpha"].value - dense.params["alpha"].value,
                               struct.replicates[:n, 2] - dense.replicates[:n, 2], struct.level)


@dataclass
class TaxonomyTrend:
    """Least-squares slope of the frontier exponent against one coordinate across Einsum structures."""

    coordinate: str
    slope: Interval
    structures: int


def taxonomy_trends(rows: pd.DataFrame, fits: dict[str, FrontierFit]) -> list[TaxonomyTrend]:
    """Slope of alpha vs omega, psi and nu over labelled structures (rows: label, omega, psi, nu)."""
    trends = []
    labels = [lab for lab in rows["label"] if lab in fits]
    if len(labels) < 2:
        return trends
    sub = rows.set_index("label").loc[labels]
    n = min(len(fits[lab].replicates) for lab in labels)
    alpha_pt = np.array([fits[lab].params["alpha"].value for lab in labels])
    alpha_rep = np.stack([fits[lab].replicates[:n, 2] for lab in labels], axis=1)  # [R, structures]
    for coord in ("omega", "psi", "nu"):
        x = sub[coord].to_numpy(float)
        if np.unique(x).size < 2:
            continue
        xc = x - x.mean()
        slope = (alpha_pt - alpha_pt.mean()) @ xc / (xc @ xc)
        reps = (alpha_rep - alpha_rep.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
        level = fits[labels[0]].level
        trends.append(TaxonomyTrend(coord, percentile_interval(float(slope), reps, level), len(labels)))
    return trends
