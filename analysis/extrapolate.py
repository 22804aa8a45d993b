"""Extrapolation check: refit without the largest one or two budgets and predict what was held out.

A fit that describes the data should predict the held-out largest budgets: for the loss frontier the
envelope's loss there (the lowest final loss of that budget's runs), for isoFLOP the measured N*(C).
Each row reports the prediction's interval, the relative error and whether the held-out value fell inside.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.bootstrap import DEFAULT_LEVEL, DEFAULT_REPLICATES
from analysis.errors import AnalysisError
from analysis.frontier import fit_frontier
from analysis.isoflop import DEFAULT_BUDGET_TOLERANCE, IsoflopFit, assign_budgets, fit_isoflop
from analysis.noise import SeedNoise

COLUMNS = ("fit", "held_out", "flops", "predicted", "lo", "hi", "observed", "rel_error", "inside", "note")


def _row(fit: str, k: int, flops: float, note: str = "", pred=None, observed: float = float("nan")) -> dict:
    row = {"fit": fit, "held_out": k, "flops": flops, "predicted": np.nan, "lo": np.nan, "hi": np.nan,
           "observed": observed, "rel_error": np.nan, "inside": None, "note": note}
    if pred is not None:
        row.update(predicted=pred.value, lo=pred.lo, hi=pred.hi)
        if np.isfinite(observed):
            row.update(rel_error=pred.value / observed - 1, inside=pred.contains(observed))
    return row


def frontier_holdout(curves: pd.DataFrame, noise: SeedNoise | None, holdouts: tuple[int, ...] = (1, 2),
                     replicates: int = DEFAULT_REPLICATES, seed: int = 0, level: float = DEFAULT_LEVEL,
                     budget_tolerance: float = DEFAULT_BUDGET_TOLERANCE) -> pd.DataFrame:
    """Refit L(C) without the runs of the k largest budgets; predict the lowest final loss of each."""
    finals = curves.loc[curves.groupby("run_id")["flops"].idxmax()]
    budget = pd.Series(assign_budgets(finals["flops"].to_numpy(float), budget_tolerance), index=finals["run_id"])
    levels = np.sort(budget.unique())
    rows = []
    for k in holdouts:
        held = levels[-k:] if len(levels) > k else levels
        observed = {c: float(finals.loc[budget.to_numpy() == c, "loss"].min()) for c in held}
        train = curves[curves["run_id"].map(budget) < held.min()]
        try:
            fit = fit_frontier(train, noise, replicates, seed, level)
        except AnalysisError as err:
            rows.extend(_row("frontier", k, c, f"refit failed: {err}", observed=observed[c]) for c in held)
            continue
        rows.extend(_row("frontier", k, c, pred=fit.predict_interval(c), observed=observed[c]) for c in held)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def isoflop_holdout(points: pd.DataFrame, full: IsoflopFit, noise: SeedNoise | None,
                    holdouts: tuple[int, ...] = (1, 2), replicates: int = DEFAULT_REPLICATES, seed: int = 0,
                    level: float = DEFAULT_LEVEL, budget_tolerance: float = DEFAULT_BUDGET_TOLERANCE) -> pd.DataFrame:
    """Refit N* ~ C^a without the k largest budgets; predict N* where the full fit measured it."""
    budget = assign_budgets(points["flops"].to_numpy(float), budget_tolerance)
    levels = np.sort(np.unique(budget))
    measured = full.budgets.set_index("flops")
    rows = []
    for k in holdouts:
        held = levels[-k:] if len(levels) > k else levels
        observed = {}
        for c in held:
            match = measured.index[np.isclose(measured.index, c, rtol=1e-9)]
            used = len(match) and bool(measured.loc[match[0], "used"])
            observed[c] = float(measured.loc[match[0], "n_star"]) if used else float("nan")
        try:
            fit = fit_isoflop(points[budget < held.min()], noise, replicates, seed, level, budget_tolerance)
        except AnalysisError as err:
            rows.extend(_row("isoflop", k, c, f"refit failed: {err}", observed=observed[c]) for c in held)
            continue
        for c in held:
            note = "" if np.isfinite(observed[c]) else "held-out budget has no interior optimum to compare with"
            rows.append(_row("isoflop", k, c, note, pred=fit.predict_n(c), observed=observed[c]))
    return pd.DataFrame(rows, columns=list(COLUMNS))
