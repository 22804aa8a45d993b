"""Load run directories (or any source of run records) into tidy tables of runs and evaluation curves.

Only completed runs with a finite final loss and a FLOP count enter the tables; every other run is listed
in `excluded` with its reason, so nothing is dropped silently. Each run gets

    n_eff = train_flops_per_token / 6      (effective parameters: what a dense model of equal cost would have)

next to its raw `params`, an `experiment` (family/data) within which structures are compared, and a `label`
that tells structures apart (einsum runs are labelled by their theta and carry omega, psi, nu).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

from analysis.errors import AnalysisError
from analysis.taxonomy import coordinates, theta_label
from scaling.results import SUMMARY_KEYS, iter_run_dirs, read_jsonl, read_summary
from scaling.run_files import RunFileError

EVAL_COLUMNS = ("run_id", "step", "tokens", "flops", "val_loss")
EXCLUDED_COLUMNS = ("run_id", "status", "reason", "source")
EXTRA_COLUMNS = ("experiment", "data", "label", "theta", "omega", "psi", "nu", "n_eff")
RUN_COLUMNS = tuple(SUMMARY_KEYS) + EXTRA_COLUMNS
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class RunRecord:
    """One run as any source delivers it: its summary, resolved config and metric rows."""

    run_id: str
    summary: dict[str, Any] | None
    config: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    source: str


@dataclass
class RunTable:
    """Usable runs (one row each), their evaluation points, and the excluded runs with their reasons."""

    runs: pd.DataFrame
    evals: pd.DataFrame
    excluded: pd.DataFrame

    def exclusion_note(self) -> str:
        """One line such as `excluded 5 of 120 runs: 3 status diverged, 2 status running`."""
        if self.excluded.empty:
            return f"all {len(self.runs)} runs used"
        counts = self.excluded["reason"].value_counts()
        parts = ", ".join(f"{n} {reason}" for reason, n in counts.items())
        return f"excluded {len(self.excluded)} of {len(self.runs) + len(self.excluded)} runs: {parts}"


def _finite_positive(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _exclusion_reason(summary: dict[str, Any] | None) -> str | None:
    if summary is None:
        return "no readable summary.json"
    if summary.get("status") != "completed":
        return f"status {summary.get('status', 'missing')}"
    if _finite_positive(summary.get("final_val_loss")) is None:
        return "no finite final_val_loss"
    if _finite_positive(summary.get("train_flops_per_token")) is None:
        return "no train_flops_per_token (needed for N_eff = F/6)"
    if _finite_positive(summary.get("flops")) is None and _finite_positive(summary.get("tokens")) is None:
        return "neither flops nor tokens recorded"
    return None


def _run_row(rec: RunRecord) -> dict[str, Any]:
    s, cfg = rec.summary or {}, rec.config or {}
    row = {k: s.get(k) for k in SUMMARY_KEYS}
    row["run_id"] = s.get("run_id") or rec.run_id
    model, structure, data = cfg.get("model") or {}, cfg.get("structure") or {}, cfg.get("data") or {}
    for key, section, name in (("family", model, "family"), ("width", model, "width"), ("depth", model, "depth"),
                               ("parametrization", model, "parametrization"), ("structure", structure, "name")):
        if row.get(key) is None:
            row[key] = section.get(name)
    row["data"] = s.get("data") or data.get("name") or "unknown"
    row["experiment"] = f"{row.get('family') or 'unknown'}/{row['data']}"
    ftok = float(row["train_flops_per_token"])
    row["n_eff"] = ftok / 6
    if _finite_positive(row.get("flops")) is None:
        row["flops"] = ftok * float(row["tokens"])
    if _finite_positive(row.get("tokens")) is None:
        row["tokens"] = float(row["flops"]) / ftok
    theta = s.get("theta") or structure.get("theta")
    row["label"] = row.get("structure") or "unknown"
    row["theta"], row["omega"], row["psi"], row["nu"] = None, None, None, None
    if theta is not None and row["label"] == "einsum":
        row["theta"] = ",".join(f"{float(t):g}" for t in theta)
        row["label"] = theta_label(theta)
        coords = coordinates(theta)
        row["omega"], row["psi"], row["nu"] = coords.omega, coords.psi, coords.nu
    for key in ("omega", "psi", "nu"):  # values the trainer recorded take precedence
        if s.get(key) is not None:
            row[key] = float(s[key])
    return row


def _eval_rows(rid: str, ftok: float, metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for m in metrics:
        if m.get("kind") != "eval":
            continue
        loss = _finite_positive(m.get("val_loss"))
        flops = _finite_positive(m.get("flops"))
        tokens = _finite_positive(m.get("tokens"))
        if flops is None and tokens is not None:
            flops = tokens * ftok
        if loss is None or flops is None:
            continue
        rows.append({"run_id": rid, "step": m.get("step"), "tokens": tokens if tokens else flops / ftok,
                     "flops": flops, "val_loss": loss})
    return rows


def table_from_records(records: Iterable[RunRecord]) -> RunTable:
    """Build the run, evaluation and exclusion tables from run records of any source."""
    runs, evals, excluded = [], [], []
    for rec in records:
        reason = _exclusion_reason(rec.summary)
        if reason is not None:
            status = (rec.summary or {}).get("status", "unknown")
            excluded.append({"run_id": rec.run_id, "status": status, "reason": reason, "source": rec.source})
            continue
        try:
            row = _run_row(rec)
        except AnalysisError as err:  # e.g. a malformed einsum theta: this run only
            excluded.append({"run_id": rec.run_id, "status": "completed", "reason": str(err), "source": rec.source})
            continue
        runs.append(row)
        curve = _eval_rows(row["run_id"], float(row["train_flops_per_token"]), rec.metrics)
        if not curve:  # no evaluation rows: the final point still belongs on the curve
            curve = [{"run_id": row["run_id"], "step": row.get("steps"), "tokens": float(row["tokens"]),
                      "flops": float(row["flops"]), "val_loss": float(row["final_val_loss"])}]
        evals.extend(curve)
    return RunTable(
        runs=pd.DataFrame(runs, columns=list(RUN_COLUMNS)),
        evals=pd.DataFrame(evals, columns=list(EVAL_COLUMNS)),
        excluded=pd.DataFrame(excluded, columns=list(EXCLUDED_COLUMNS)),
    )


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        config = yaml.load(path.read_text(), Loader=_YAML_LOADER)
    except (FileNotFoundError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def iter_directory_records(results_root: str | Path) -> Iterable[RunRecord]:
    """Run records from `<results_root>/runs/<run_id>/` (summary.json, config.yaml, metrics.jsonl)."""
    for rdir in iter_run_dirs(results_root):
        try:
            yield RunRecord(rdir.name, read_summary(rdir), _read_config(rdir / "config.yaml"),
                            read_jsonl(rdir / "metrics.jsonl"), str(rdir))
        except RunFileError as err:  # that run's problem: one line with the file and the fix, the rest loads
            print(f"warning: {err}", file=sys.stderr)
            yield RunRecord(rdir.name, None, None, [], str(rdir))


def load_results(results_root: str | Path) -> RunTable:
    """Tidy tables of every run under results_root; raises AnalysisError when there is nothing to analyse."""
    root = Path(results_root)
    if not (root / "runs").is_dir():
        raise AnalysisError(f"--results {root}: no runs/ directory there; point it at the results root "
                            "that holds runs/<run_id>/summary.json")
    table = table_from_records(iter_directory_records(root))
    if table.runs.empty:
        if table.excluded.empty:
            raise AnalysisError(f"--results {root}: runs/ holds no run directories")
        raise AnalysisError(f"--results {root}: no usable runs; {table.exclusion_note()}. "
                            "Wait for runs to finish or rerun the diverged ones with a lower lr")
    return table


COORD_COLUMNS = ("width", "layer", "step", "delta_rms")


def load_coordchecks(paths: Iterable[str | Path]) -> dict[str, pd.DataFrame]:
    """coord.csv tables written by `python -m scaling.coordcheck`, keyed by their folder's name.

    Each path is a coord.csv or a folder holding one; rows are (width, seed, layer, role, structure, step,
    delta_rms, h_rms).
    """
    checks = {}
    for path in map(Path, paths):
        csv = path / "coord.csv" if path.is_dir() else path
        if not csv.is_file():
            raise AnalysisError(f"--coordcheck {path}: no coord.csv there; pass the coordcheck.out folder of "
                                "`python -m scaling.coordcheck`")
        df = pd.read_csv(csv)
        missing = set(COORD_COLUMNS) - set(df.columns)
        if missing:
            raise AnalysisError(f"--coordcheck {csv}: missing columns {sorted(missing)}; expected the coord.csv "
                                "of `python -m scaling.coordcheck`")
        checks[csv.parent.name] = df
    return checks
