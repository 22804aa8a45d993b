"""Files for other tools: runs.parquet (one row per run and sweep), curves.parquet (one row per evaluation),
and JSON-ready copies of fit results.

A run two sweeps share has one row per sweep in runs.parquet (its label may differ between them) and its
evaluations once in curves.parquet. CSV copies of the run and excluded tables sit next to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.io.load import EVAL_COLUMNS, EXCLUDED_COLUMNS, RunTable


def _stack(tables: Mapping[str | None, RunTable], part: str) -> pd.DataFrame:
    frames = [getattr(t, part).assign(sweep_reported=sweep) for sweep, t in tables.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_exports(tables: Mapping[str | None, RunTable], out: Path) -> None:
    """runs.parquet, curves.parquet, runs.csv and excluded.csv under `out`."""
    runs = _stack(tables, "runs")
    curves = pd.concat([t.evals for t in tables.values()], ignore_index=True).drop_duplicates(["run_id", "step",
                                                                                               "flops"])
    curves = curves.merge(runs.drop_duplicates("run_id")[["run_id", "label"]], on="run_id", how="left")
    for col in ("theta", "eval_flops"):  # None or "a,b,..": string columns for parquet
        runs[col] = runs[col].astype("string")
    runs.to_parquet(out / "runs.parquet", index=False)
    curves.to_parquet(out / "curves.parquet", index=False)
    runs.to_csv(out / "runs.csv", index=False)
    _stack(tables, "excluded").to_csv(out / "excluded.csv", index=False)


def read_exports(directory: str | Path) -> dict[str | None, RunTable]:
    """The tables `write_exports` wrote under `directory`, per sweep: a written report re-analysed without its runs."""
    root = Path(directory)
    paths = [root / "runs.parquet", root / "curves.parquet"]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise AnalysisError(f"exports={root}: no {' or '.join(missing)} there; point it at a report directory "
                            "written by `python -m analysis report` (it holds runs.parquet and curves.parquet)",
                            "exports")
    runs, curves = (pd.read_parquet(p) for p in paths)
    if "final_train_loss" not in runs:  # written before runs recorded it
        runs["final_train_loss"] = float("nan")
    for col in ("theta", "eval_flops"):
        runs[col] = runs[col].astype(object).where(runs[col].notna(), None)
    excluded_csv = root / "excluded.csv"
    excluded = pd.read_csv(excluded_csv) if excluded_csv.is_file() else pd.DataFrame(columns=["sweep_reported"])
    tables = {}
    for sweep, mine in runs.groupby("sweep_reported", sort=False, dropna=False):
        key = None if pd.isna(sweep) else str(sweep)
        evals = curves[curves["run_id"].isin(mine["run_id"])][list(EVAL_COLUMNS)].reset_index(drop=True)
        gone = excluded[excluded["sweep_reported"].astype(object).eq(sweep)] if len(excluded) else excluded
        tables[key] = RunTable(mine.drop(columns="sweep_reported").reset_index(drop=True), evals,
                               gone.reindex(columns=list(EXCLUDED_COLUMNS)).reset_index(drop=True))
    return tables


def merged_tables(*sources: Mapping[str | None, RunTable]) -> dict[str | None, RunTable]:
    """The tables of several sources (written reports, a results store) as one, per sweep: a run in more than one
    keeps the row and evaluations of the first source that has it (a run id is one result, so they agree)."""
    parts: dict[str | None, list[RunTable]] = {}
    for tables in sources:
        for sweep, table in tables.items():
            parts.setdefault(sweep, []).append(table)
    merged = {}
    for sweep, tables in parts.items():
        runs, evals, seen = [], [], set()
        for t in tables:  # a run's row and evaluations come from the first source that has it
            new = t.runs[~t.runs["run_id"].isin(seen)]
            runs.append(new)
            evals.append(t.evals[t.evals["run_id"].isin(set(new["run_id"]))])
            seen |= set(new["run_id"])
        excluded = pd.concat([t.excluded for t in tables], ignore_index=True)
        excluded = excluded[~excluded["run_id"].isin(seen)].drop_duplicates("run_id")
        merged[sweep] = RunTable(pd.concat(runs, ignore_index=True), pd.concat(evals, ignore_index=True),
                                 excluded.reset_index(drop=True))
    return merged


def plain(obj: object) -> object:
    """JSON-ready copy: numpy scalars become Python ones, non-finite floats null, other objects strings."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)) or obj is None:
        return None if obj is None else bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj if isinstance(obj, str) else str(obj)
