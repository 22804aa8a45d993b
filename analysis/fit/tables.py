"""Fits on any table of runs (a CSV from elsewhere or a DataFrame in a notebook), by column name.

These back the `fit-parametric`, `fit-frontier` and `isoflop` commands. Tokens are derived as
D = C / (6 N) when only FLOPs are given, and FLOPs as C = 6 N D when only tokens are.

Rows sharing (budget, size, lr) are seeds and are averaged; rows differing in lr (`lr_col`) are minimised over,
optionally through an Akima interpolation in log lr (analysis.fit.hparams). With `run_col` the rows are evaluation
curves, one run per value, read at every budget they pass (analysis.fit.budgets; a CSV's curves are taken as
readable at intermediate budgets, e.g. constant-LR runs). `loss_noise` is an absolute loss std for the
bootstrap; without it the noise is measured from repeated seeds, else from residuals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.fit.bootstrap import DEFAULT_LEVEL, DEFAULT_REPLICATES
from analysis.fit.budgets import budget_grid, read_at_budgets
from analysis.errors import AnalysisError
from analysis.fit.frontier import FrontierFit, fit_frontier
from analysis.fit.hparams import best_over_hparams
from analysis.fit.isoflop import DEFAULT_BUDGET_TOLERANCE, IsoflopFit, assign_budgets, fit_isoflop
from analysis.fit.noise import SeedNoise, given_noise, measure_seed_noise
from analysis.fit.parametric import ParametricFit, fit_parametric


MAX_VALUE = 1e60  # far above any real parameter, token, FLOP count or loss, and safe to multiply in float64


def read_table(csv: str | Path) -> pd.DataFrame:
    """A CSV file as a DataFrame; a missing or unparsable file raises AnalysisError."""
    p = Path(csv)
    if not p.is_file():
        what = "a folder, not a CSV file" if p.is_dir() else "not a regular file" if p.exists() else "no such file"
        raise AnalysisError(f"csv={p}: {what}; give the path of a CSV file", "csv")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        reason = " ".join(str(err).split())  # pandas ends some messages with a newline: keep the error one line
        raise AnalysisError(f"csv={p}: not a readable CSV ({reason})", "csv") from err
    if df.empty:
        raise AnalysisError(f"csv={p}: the file has a header but no rows", "csv")
    return df


def column(df: pd.DataFrame, name: str, argument: str) -> np.ndarray:
    """Numeric column `name`; a missing or non-numeric column names the argument (e.g. loss_col) to fix."""
    if name not in df.columns:
        raise AnalysisError(f"{argument}={name!r}: no such column; the table has {list(df.columns)}", argument)
    values = pd.to_numeric(df[name], errors="coerce").to_numpy(float)
    if np.isnan(values).all():
        raise AnalysisError(f"{argument}={name!r}: the column holds no numbers", argument)
    huge = np.flatnonzero(np.abs(values) > MAX_VALUE)
    if huge.size:
        raise AnalysisError(f"{argument}={name!r}: row {huge[0] + 1} holds {values[huge[0]]:g}, beyond "
                            f"{MAX_VALUE:g} (products such as 6 N D would overflow); fix or drop the row", argument)
    return values


def _tokens_and_flops(df: pd.DataFrame, n: np.ndarray, tokens_col: str | None,
                      flops_col: str | None) -> tuple[np.ndarray, np.ndarray]:
    if (tokens_col is None) == (flops_col is None):
        raise AnalysisError("give exactly one of `tokens_col` and `flops_col` (tokens are derived as "
                            "FLOPs / (6 params) when only FLOPs are known)", "tokens_col", "flops_col")
    if tokens_col is not None:
        tokens = column(df, tokens_col, "tokens_col")
        return tokens, 6 * n * tokens
    flops = column(df, flops_col, "flops_col")
    return flops / (6 * n), flops


def groups(df: pd.DataFrame, group_col: str | None) -> dict[str, pd.DataFrame]:
    """{group value: rows} for `group_col` (one fit per group), or {"": df} without it."""
    if not group_col:
        return {"": df}
    if group_col not in df.columns:
        raise AnalysisError(f"group_col={group_col!r}: no such column; the table has {list(df.columns)}",
                            "group_col")
    if df[group_col].isna().all():
        raise AnalysisError(f"group_col={group_col!r}: the column is empty in every row; fill it in (one fit per "
                            "value), or leave out `group_col` for one fit", "group_col")
    return {str(k): g for k, g in df.groupby(group_col, sort=True)}


def _noise(loss_noise: float | None) -> SeedNoise | None:
    if loss_noise is None:
        return None
    if not (np.isfinite(loss_noise) and loss_noise > 0):
        raise AnalysisError(f"loss_noise={loss_noise}: must be a positive loss std, e.g. 0.002", "loss_noise")
    return given_noise(loss_noise)


def _optional(df: pd.DataFrame, name: str | None, argument: str) -> np.ndarray | None:
    return None if name is None else column(df, name, argument)


def _points(df: pd.DataFrame, n: np.ndarray, flops: np.ndarray, loss: np.ndarray, run_col: str | None,
            lr: np.ndarray | None, seed: np.ndarray | None, tolerance: float,
            budgets: Sequence[float] | None = None) -> pd.DataFrame:
    """Rows (flops, n, loss[, lr, seed]); with run_col every run's curve is read at every budget it passes: the
    runs' final FLOPs and `budgets` (e.g. a from_curves sweep's smaller budgets)."""
    pts = pd.DataFrame({"flops": flops, "n": n, "loss": loss})
    if lr is not None:
        pts["lr"] = lr
    if seed is not None:
        pts["seed"] = seed
    if run_col is None:
        return pts
    if run_col not in df.columns:
        raise AnalysisError(f"run_col={run_col!r}: no such column; the table has {list(df.columns)}", "run_col")
    pts["run_id"] = df[run_col].astype(str).to_numpy()
    per_run = pts.groupby("run_id").agg(n=("n", "first"), n_max=("n", "max"), n_min=("n", "min"),
                                        first=("flops", "min"), final=("flops", "max"))
    if (per_run["n_max"] != per_run["n_min"]).any():
        bad = per_run.index[per_run["n_max"] != per_run["n_min"]][0]
        raise AnalysisError(f"run_col={run_col!r}: run {bad} has several sizes; a run's rows must share one "
                            "`params_col` value", "run_col", "params_col")
    grid = budget_grid(per_run["final"].to_numpy(), tolerance, per_run["first"].to_numpy(),
                       np.asarray(budgets if budgets is not None else [], float))
    reads = read_at_budgets(pts[["run_id", "flops", "loss"]], grid, tolerance=tolerance)
    extra = [c for c in ("lr", "seed") if c in pts.columns]
    info = pts.groupby("run_id")[extra].first().join(per_run["n"]).reset_index()
    return reads.merge(info, on="run_id").drop(columns="run_id")


def parametric_from_table(df: pd.DataFrame, params_col: str, loss_col: str, tokens_col: str | None = None,
                          flops_col: str | None = None, replicates: int = DEFAULT_REPLICATES, seed: int = 0,
                          level: float = DEFAULT_LEVEL, lr_col: str | None = None,
                          interpolate_lr: bool = False, run_col: str | None = None,
                          budgets: Sequence[float] | None = None) -> ParametricFit:
    """Approach 3 on a table with one row per run, or with `run_col` one row per evaluation (every run's curve read
    at every budget it passes: the final FLOPs and `budgets`); the best lr per size and budget with `lr_col`."""
    n = column(df, params_col, "params_col")
    tokens, flops = _tokens_and_flops(df, n, tokens_col, flops_col)
    pts = _points(df, n, flops, column(df, loss_col, "loss_col"), run_col, _optional(df, lr_col, "lr_col"), None,
                  DEFAULT_BUDGET_TOLERANCE, budgets)
    best = best_over_hparams(pts, "n", (), "lr" if lr_col else None, interpolate_lr)
    return fit_parametric(best["n"], best["flops"] / (6 * best["n"]), best["loss"], replicates, seed, level)


def frontier_from_table(df: pd.DataFrame, flops_col: str, loss_col: str, run_col: str | None = None,
                        replicates: int = DEFAULT_REPLICATES, seed: int = 0, level: float = DEFAULT_LEVEL,
                        loss_noise: float | None = None) -> FrontierFit:
    """Approach 1 on a table of points; rows sharing `run_col` form one run's curve (else each row is a run)."""
    if run_col and run_col not in df.columns:
        raise AnalysisError(f"run_col={run_col!r}: no such column; the table has {list(df.columns)}", "run_col")
    runs = df[run_col].astype(str).to_numpy() if run_col else np.arange(len(df)).astype(str)
    curves = pd.DataFrame({"run_id": runs, "flops": column(df, flops_col, "flops_col"),
                           "loss": column(df, loss_col, "loss_col")})
    return fit_frontier(curves, _noise(loss_noise), replicates, seed, level)


def isoflop_from_table(df: pd.DataFrame, params_col: str, loss_col: str, flops_col: str | None = None,
                       tokens_col: str | None = None, replicates: int = DEFAULT_REPLICATES, seed: int = 0,
                       level: float = DEFAULT_LEVEL, run_col: str | None = None, lr_col: str | None = None,
                       seed_col: str | None = None, loss_noise: float | None = None,
                       interpolate_lr: bool = False, tolerance: float = DEFAULT_BUDGET_TOLERANCE,
                       budgets: Sequence[float] | None = None) -> IsoflopFit:
    """Approach 2 on a table of runs (or, with `run_col`, of curves): best lr per (budget, size), seeds averaged."""
    n = column(df, params_col, "params_col")
    _, flops = _tokens_and_flops(df, n, tokens_col, flops_col)
    pts = _points(df, n, flops, column(df, loss_col, "loss_col"), run_col, _optional(df, lr_col, "lr_col"),
                  _optional(df, seed_col, "seed_col"), tolerance, budgets)
    pts["flops"] = assign_budgets(pts["flops"].to_numpy(float), tolerance)
    noise = _noise(loss_noise)
    if noise is None:
        noise = measure_seed_noise(pts, ["flops", "n"] + (["lr"] if lr_col else []), "loss")
    best = best_over_hparams(pts, "n", (), "lr" if lr_col else None, interpolate_lr)
    return fit_isoflop(best, noise, replicates, seed, level, tolerance)
