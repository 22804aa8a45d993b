"""Fits on any table of runs (a CSV from elsewhere or a DataFrame in a notebook), by column name.

These back the `fit-parametric`, `fit-frontier` and `isoflop` commands. Tokens are derived as
D = C / (6 N) when only FLOPs are given, and FLOPs as C = 6 N D when only tokens are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.bootstrap import DEFAULT_LEVEL, DEFAULT_REPLICATES
from analysis.errors import AnalysisError
from analysis.frontier import FrontierFit, fit_frontier
from analysis.isoflop import IsoflopFit, fit_isoflop
from analysis.parametric import ParametricFit, fit_parametric


MAX_VALUE = 1e60  # far above any real parameter, token, FLOP count or loss, and safe to multiply in float64


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV file as a DataFrame; a missing or unparsable file raises AnalysisError."""
    p = Path(path)
    if not p.is_file():
        raise AnalysisError(f"--csv {p}: no such file")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise AnalysisError(f"--csv {p}: not a readable CSV ({err})") from err
    if df.empty:
        raise AnalysisError(f"--csv {p}: the file has a header but no rows")
    return df


def column(df: pd.DataFrame, name: str, option: str) -> np.ndarray:
    """Numeric column `name`; a missing or non-numeric column names the option (e.g. --loss-col) to fix."""
    if name not in df.columns:
        raise AnalysisError(f"{option} {name!r}: no such column; the table has {list(df.columns)}")
    values = pd.to_numeric(df[name], errors="coerce").to_numpy(float)
    if np.isnan(values).all():
        raise AnalysisError(f"{option} {name!r}: the column holds no numbers")
    huge = np.flatnonzero(np.abs(values) > MAX_VALUE)
    if huge.size:
        raise AnalysisError(f"{option} {name!r}: row {huge[0] + 1} holds {values[huge[0]]:g}, beyond {MAX_VALUE:g} "
                            "(products such as 6 N D would overflow); fix or drop the row")
    return values


def _tokens_and_flops(df: pd.DataFrame, n: np.ndarray, tokens_col: str | None,
                      flops_col: str | None) -> tuple[np.ndarray, np.ndarray]:
    if (tokens_col is None) == (flops_col is None):
        raise AnalysisError("give exactly one of --tokens-col and --flops-col (tokens are derived as "
                            "FLOPs / (6 params) when only FLOPs are known)")
    if tokens_col is not None:
        tokens = column(df, tokens_col, "--tokens-col")
        return tokens, 6 * n * tokens
    flops = column(df, flops_col, "--flops-col")
    return flops / (6 * n), flops


def parametric_from_table(df: pd.DataFrame, params_col: str, loss_col: str, tokens_col: str | None = None,
                          flops_col: str | None = None, replicates: int = DEFAULT_REPLICATES, seed: int = 0,
                          level: float = DEFAULT_LEVEL) -> ParametricFit:
    """Approach 3 on a table with one row per run."""
    n = column(df, params_col, "--params-col")
    tokens, _ = _tokens_and_flops(df, n, tokens_col, flops_col)
    return fit_parametric(n, tokens, column(df, loss_col, "--loss-col"), replicates, seed, level)


def frontier_from_table(df: pd.DataFrame, flops_col: str, loss_col: str, run_col: str | None = None,
                        replicates: int = DEFAULT_REPLICATES, seed: int = 0,
                        level: float = DEFAULT_LEVEL) -> FrontierFit:
    """Approach 1 on a table of points; rows sharing `run_col` form one run's curve (else each row is a run)."""
    if run_col and run_col not in df.columns:
        raise AnalysisError(f"--run-col {run_col!r}: no such column; the table has {list(df.columns)}")
    runs = df[run_col].astype(str).to_numpy() if run_col else np.arange(len(df)).astype(str)
    curves = pd.DataFrame({"run_id": runs, "flops": column(df, flops_col, "--flops-col"),
                           "loss": column(df, loss_col, "--loss-col")})
    return fit_frontier(curves, None, replicates, seed, level)


def isoflop_from_table(df: pd.DataFrame, params_col: str, loss_col: str, flops_col: str | None = None,
                       tokens_col: str | None = None, replicates: int = DEFAULT_REPLICATES, seed: int = 0,
                       level: float = DEFAULT_LEVEL) -> IsoflopFit:
    """Approach 2 on a table with one row per run; rows with equal budget and size count as seeds."""
    n = column(df, params_col, "--params-col")
    _, flops = _tokens_and_flops(df, n, tokens_col, flops_col)
    points = pd.DataFrame({"flops": flops, "n": n, "loss": column(df, loss_col, "--loss-col")})
    return fit_isoflop(points, None, replicates, seed, level)
