"""The report in the wandb dashboard: one analysis run per sweep, in the sweep's group beside its training runs.

Each run (job type `analysis`) holds the sweep's plots as images, its pooled multipliers, per-label fits and fit
statuses as wandb Tables, the verdict as text and summary values, and the report's files as an artifact. Its id
is a digest of the sweep's fits and the report's settings, so rerunning the same report reuses the run (offline,
wandb writes another folder under the same id; syncing merges them) and the dashboard shows no duplicates.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisError
from analysis.io.exports import plain
from analysis.report.build import ExperimentResult, Report, report_dict
from analysis.report.markdown import verdict

MODES = ("online", "offline", "disabled")
REPORT_FILES = ("report.md", "fits.json", "runs.parquet", "curves.parquet", "runs.csv", "excluded.csv")


def wandb_mode(mode: str | None) -> str:
    """`mode`, else $WANDB_MODE, else offline (the training runs' default)."""
    chosen = mode or os.environ.get("WANDB_MODE") or "offline"
    if chosen not in MODES:
        raise AnalysisError(f"wandb_mode={chosen!r} is not a wandb mode; choose one of {', '.join(MODES)} "
                            "(or set WANDB_MODE)", "wandb_mode")
    return chosen


def analysis_run_id(sweep: str | None, fits: dict[str, Any]) -> str:
    """16 hex digits of the sweep's fits and the report's settings: the same inputs give the same run."""
    blob = json.dumps({"sweep": sweep, "fits": fits}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def multiplier_rows(exp: ExperimentResult) -> list[list[Any]]:
    """Per label: the pooled multiplier of the supported model at the reference compute, with interval and status."""
    pooled = exp.pooled
    if pooled is None:
        return []
    rows = []
    for label in pooled.labels:
        iv = pooled.multiplier(label)
        status = "reference" if label == pooled.reference else exp.structures[label].status["pooled"].status
        rows.append([exp.name, label, pooled.labels[label].runs, *plain([iv.value, iv.lo, iv.hi]), status,
                     pooled.model, pooled.reference_flops])  # a failed fit's inf / nan as fits.json writes it: null
    return rows


def status_rows(exp: ExperimentResult) -> list[list[Any]]:
    """Every fit's status and reasons, per label."""
    return [[exp.name, label, fit, st.status, "; ".join(st.reasons)]
            for label, res in exp.structures.items() for fit, st in res.status.items()]


def log_report(report: Report, out: Path, project: str, entity: str | None = None,
               mode: str | None = None) -> list[str]:
    """Log `report` (written under `out`) to wandb: one analysis run per sweep; returns their run ids."""
    mode = wandb_mode(mode)
    if mode == "disabled":
        return []
    import wandb

    fits = plain(report_dict(report))
    settings = {"replicates": report.replicates, "seed": report.seed, "level": report.level, "source": report.source}
    ids = []
    for sweep in report.tables:
        experiments = [e for e in report.experiments if e.sweep == sweep]
        mine = [e for e in fits["experiments"] if e["sweep"] == sweep]
        rid = analysis_run_id(sweep, {"experiments": mine, **settings})
        run = wandb.init(mode=mode, project=project, entity=entity, group=sweep, job_type="analysis",
                         name=f"analysis {sweep or 'runs'}", id=rid, resume="allow", dir=str(out),
                         config={**settings, "sweep": sweep}, settings=wandb.Settings(console="off", silent=True))
        _log_sweep(run, wandb, experiments, out, sweep)
        run.finish()
        ids.append(rid)
    return ids


def _log_sweep(run, wandb, experiments: list[ExperimentResult], out: Path, sweep: str | None) -> None:
    multipliers = [row for exp in experiments for row in multiplier_rows(exp)]
    statuses = [row for exp in experiments for row in status_rows(exp)]
    images = sorted((out / "plots").glob(f"{_slug(str(sweep))}_*.png")) if sweep else []
    run.log({
        "multipliers": wandb.Table(columns=["experiment", "label", "runs", "multiplier", "lo", "hi", "status",
                                            "model", "reference_flops"], data=multipliers),
        "fit_status": wandb.Table(columns=["experiment", "label", "fit", "status", "reasons"], data=statuses),
        **{f"plots/{p.stem}": wandb.Image(str(p)) for p in images},
    })
    text = "\n".join(line for exp in experiments for line in verdict(exp))
    run.summary.update({"verdict": text, **{f"multiplier/{row[0]}/{row[1]}": row[3] for row in multipliers}})
    artifact = wandb.Artifact(f"report-{_slug(str(sweep or 'runs'))}", type="analysis-report")
    for name in REPORT_FILES:
        if (out / name).is_file():
            artifact.add_file(str(out / name), name=name)
    for p in images:
        artifact.add_file(str(p), name=f"plots/{p.name}")
    run.log_artifact(artifact)
