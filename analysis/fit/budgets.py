"""FLOP budgets, and every run's loss read at each budget its curve passes (so one run serves several budgets).

Budgets are the runs' final FLOPs grouped within `tolerance` (an isoFLOP sweep's budgets). When the finals do
not group (a token-budget sweep, where most groups hold one run) the budgets are a factor-2 grid down from the
largest final, as in Porian et al., to the smallest final (or, for curves readable at intermediate budgets,
to the median first evaluation, so that every budget has reads from several sizes). Budgets a sweep declared
for reading off curves (`budgets.from_curves`: the runs' `eval_flops`) join the grouped finals.

Reading (after Porian et al.'s `fetch_flop`): a run's loss at budget C is its evaluation curve interpolated
linearly in (log C, log L) between the evaluations around C; a C within `tolerance` outside the curve reads
its nearest end. A run whose learning rate decays to its own last step (cosine, wsd) is annealed only there,
so it is read only at the budget its final FLOPs fall on; constant-LR runs (and CSV curves) are read at every
budget they pass.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.fit.isoflop import DEFAULT_BUDGET_TOLERANCE, assign_budgets

CURVE_SCHEDULES = ("constant",)  # schedules whose intermediate evaluations are valid reads
GRID_STEP = 2.0
_MIN_PER_BUDGET = 2.0  # mean runs per final-FLOPs group for the groups to count as an isoFLOP design


def budget_grid(final_flops: np.ndarray, tolerance: float = DEFAULT_BUDGET_TOLERANCE,
                first_flops: np.ndarray | None = None, declared: np.ndarray | None = None) -> np.ndarray:
    """Sorted budgets: the groups of final FLOPs (with the `declared` read budgets) if they hold 2+ runs on average,
    else a factor-2 grid.

    `first_flops`: the first evaluation of each run readable at intermediate budgets (extends the grid down).
    """
    finals = np.asarray(final_flops, float)
    groups = np.unique(assign_budgets(finals, tolerance))
    if finals.size >= _MIN_PER_BUDGET * groups.size:
        extra = np.asarray(declared if declared is not None else [], float)
        extra = extra[[np.abs(np.log(groups / c)).min() > np.log1p(tolerance) for c in extra]]
        return np.unique(np.concatenate([groups, assign_budgets(extra, tolerance)])) if extra.size else groups
    top, bottom = finals.max(), finals.min()
    if first_flops is not None and len(first_flops):
        bottom = min(bottom, float(np.median(first_flops)))
    steps = int(np.floor(np.log(top / bottom) / np.log(GRID_STEP) + 1e-9))
    return np.sort(top / GRID_STEP ** np.arange(steps + 1))


def declared_budgets(runs: pd.DataFrame, final_only: frozenset[str] = frozenset()) -> np.ndarray:
    """The read budgets (`eval_flops`) that sweeps declared for the curve-readable runs of `runs`."""
    if "eval_flops" not in runs.columns:
        return np.array([])
    readable = runs[~runs["run_id"].isin(final_only)]["eval_flops"].dropna()
    return np.array(sorted({float(c) for text in readable for c in str(text).split(",") if c}))


def read_at_budgets(curves: pd.DataFrame, budgets: np.ndarray, final_only: set[str] | frozenset[str] = frozenset(),
                    tolerance: float = DEFAULT_BUDGET_TOLERANCE) -> pd.DataFrame:
    """Rows (run_id, flops = budget, loss) for every run of `curves` (run_id, flops, loss) at every budget it reads.

    Runs in `final_only` are read only where their last evaluation lies within `tolerance` of a budget.
    """
    budgets = np.sort(np.asarray(budgets, float))
    log_b, slack = np.log(budgets), np.log1p(tolerance)
    rows = []
    for rid, g in curves.groupby("run_id", sort=True):
        g = g.sort_values("flops")
        lc, ll = np.log(g["flops"].to_numpy(float)), np.log(g["loss"].to_numpy(float))
        if rid in final_only:
            hit = np.abs(log_b - lc[-1]) <= slack
            loss = np.full(hit.sum(), ll[-1])
        else:
            hit = (log_b >= lc[0] - slack) & (log_b <= lc[-1] + slack)
            loss = np.interp(log_b[hit], lc, ll)  # clamps to the end points just outside the curve
        rows.append(pd.DataFrame({"run_id": rid, "flops": budgets[hit], "loss": np.exp(loss)}))
    if not rows:
        return pd.DataFrame({"run_id": [], "flops": [], "loss": []})
    return pd.concat(rows, ignore_index=True)
