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

from analysis.io.load import RunTable


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
