"""Extrapolation check: refit without the largest one or two budgets and predict what was held out.

A fit that describes the data should predict the held-out largest budgets: for the loss frontier the lowest
loss any configuration reads at that budget (budgets.read_at_budgets; seeds averaged), for isoFLOP the
measured N*(C). Holding out k
budgets needs k + 2 of them (a refit needs 2); with fewer the check is skipped with a note saying so.
The held-out value is itself a noisy measurement, so its prediction interval combines the refit's bootstrap
predictions with that measurement's noise (log-normal: seed noise sigma for a loss, the budget's
sigma(log N*) for N*). Each row reports the interval, the relative error and whether the held-out value
fell inside; an interval too wide to test anything (diagnostics.informative: hi / lo above 2.5, or not
above 0) is marked uninformative instead (`informative` False, `inside` None, a note): it is no check.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.fit.bootstrap import DEFAULT_LEVEL, DEFAULT_REPLICATES, Interval, percentile_interval
from analysis.fit.budgets import budget_grid, read_at_budgets
from analysis.errors import AnalysisError
from analysis.fit.diagnostics import INFORMATIVE_FACTOR, informative
from analysis.fit.frontier import fit_frontier
from analysis.fit.isoflop import DEFAULT_BUDGET_TOLERANCE, IsoflopFit, assign_budgets, fit_isoflop
from analysis.fit.noise import SeedNoise

COLUMNS = ("fit", "held_out", "flops", "predicted", "lo", "hi", "observed", "rel_error", "inside", "informative",
           "note")


def _row(fit: str, k: int, flops: float, note: str = "", pred=None, observed: float = float("nan")) -> dict:
    row = {"fit": fit, "held_out": k, "flops": flops, "predicted": np.nan, "lo": np.nan, "hi": np.nan,
           "observed": observed, "rel_error": np.nan, "inside": None, "informative": None, "note": note}
    if pred is not None:
        row.update(predicted=pred.value, lo=pred.lo, hi=pred.hi)
        if np.isfinite(observed):
            row.update(rel_error=pred.value / observed - 1, informative=informative(pred))
            row["inside"] = pred.contains(observed) if row["informative"] else None
            if not row["informative"]:
                span = f"spans {pred.hi / pred.lo:.3g}x" if pred.lo > 0 else "reaches 0"
                row["note"] = "; ".join(filter(None, [note, f"uninformative: the interval {span} (more than "
                                                            f"{INFORMATIVE_FACTOR:g}x), no check"]))
    return row


def _with_noise(point: float, reps: np.ndarray, sigma: float, seed: int, level: float) -> Interval:
    """Interval of a new measurement: bootstrap predictions times exp(N(0, sigma^2)) measurement noise."""
    noisy = reps * np.exp(np.random.default_rng(seed).normal(0.0, sigma, reps.shape))
    return percentile_interval(point, noisy, level)


def _skip(fit: str, k: int, levels: np.ndarray) -> dict | None:
    """A skipped row when holding out k of these budgets leaves fewer than 2 to refit on."""
    if len(levels) >= k + 2:
        return None
    return _row(fit, k, float(levels[-1]) if len(levels) else float("nan"),
                f"skipped: holding out {k} budget{'s' if k > 1 else ''} needs {k + 2} budgets, the runs have "
                f"{len(levels)}")


def _lowest_mean(reads: pd.DataFrame) -> float:
    """The lowest over configs of the seed-mean loss, exp(mean log L), of reads (config, loss); nan if none."""
    return float(np.exp(np.log(reads["loss"]).groupby(reads["config"]).mean().min()))


def frontier_holdout(curves: pd.DataFrame, noise: SeedNoise | None, holdouts: tuple[int, ...] = (1, 2),
                     replicates: int = DEFAULT_REPLICATES, seed: int = 0, level: float = DEFAULT_LEVEL,
                     budget_tolerance: float = DEFAULT_BUDGET_TOLERANCE,
                     final_only: frozenset[str] = frozenset(), declared: np.ndarray | None = None,
                     floor: float | None = None) -> pd.DataFrame:
    """Refit L(C) on the runs that end below the k largest budgets; predict the lowest loss read at each.
    `declared`: read budgets the sweep declared (analysis.fit.budgets.declared_budgets); `floor`: the envelope's
    start (fit_frontier)."""
    finals = curves.groupby("run_id")["flops"].max()
    levels = budget_grid(finals.to_numpy(), budget_tolerance, declared=declared)
    reads = read_at_budgets(curves, levels, final_only, budget_tolerance)
    # seeds of a config are averaged (log-loss) before the lowest config is taken, as in the envelope
    config = curves.groupby("run_id")["config"].first() if "config" in curves.columns else None
    reads["config"] = reads["run_id"] if config is None else reads["run_id"].map(config)
    slack = 1 + budget_tolerance
    rows = []
    for k in holdouts:
        if (skipped := _skip("frontier", k, levels)) is not None:
            rows.append(skipped)
            continue
        held = levels[-k:]
        observed = {c: _lowest_mean(reads[np.isclose(reads["flops"], c, rtol=1e-9)]) for c in held}
        below = held.min() / slack  # runs read only at their end must end below; other curves are cut there
        ended = curves["run_id"].map(finals) < below
        train = curves[ended | (~curves["run_id"].isin(final_only) & (curves["flops"] < below))]
        try:
            fit = fit_frontier(train, noise, replicates, seed, level, floor=floor)
        except AnalysisError as err:
            rows.extend(_row("frontier", k, c, f"refit failed: {err}", observed=observed[c]) for c in held)
            continue
        for c in held:
            sigma = float(fit.noise.log_sigma(np.array([observed[c]]))[0]) if np.isfinite(observed[c]) else 0.0
            pred = _with_noise(float(fit.predict(c)[0]), fit.replicate_predictions(c)[:, 0], sigma, seed, level)
            rows.append(_row("frontier", k, c, pred=pred, observed=observed[c]))
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
        if (skipped := _skip("isoflop", k, levels)) is not None:
            rows.append(skipped)
            continue
        held = levels[-k:]
        observed, sigma = {}, {}
        for c in held:
            match = measured.index[np.isclose(measured.index, c, rtol=1e-9)]
            used = len(match) and bool(measured.loc[match[0], "used"])
            observed[c] = float(measured.loc[match[0], "n_star"]) if used else float("nan")
            sigma[c] = float(measured.loc[match[0], "sigma_log_n"]) if used else 0.0
        try:
            fit = fit_isoflop(points[budget < held.min()], noise, replicates, seed, level, budget_tolerance)
        except AnalysisError as err:
            rows.extend(_row("isoflop", k, c, f"refit failed: {err}", observed=observed[c]) for c in held)
            continue
        for c in held:
            note = "" if np.isfinite(observed[c]) else "held-out budget has no interior optimum to compare with"
            reps = np.exp(fit.replicates[:, 0] * np.log(c) + fit.replicates[:, 1])
            pred = _with_noise(fit.predict_n(c).value, reps, sigma[c], seed, level)
            rows.append(_row("isoflop", k, c, note, pred=pred, observed=observed[c]))
    return pd.DataFrame(rows, columns=list(COLUMNS))
