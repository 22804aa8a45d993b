"""Write a report to disk: report.md, fits.json, the exported tables and every plot."""

from __future__ import annotations

import json
from pathlib import Path

from analysis.io.exports import plain, write_exports
from analysis.report import plots
from analysis.report.build import Report, report_dict
from analysis.report.markdown import markdown, plot_jobs
from analysis.report.parallel import parallel_map


def write_report(report: Report, out: str | Path, workers: int | None = None) -> Path:
    """Write report.md, fits.json, runs/curves/excluded tables and plots/ (PNG + PDF) under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(exp.title, name, job) for exp in report.experiments
            for name, job in plot_jobs(exp, report.tables[exp.sweep], out / "plots")]
    if report.coordchecks:
        jobs.append(("", "coordinate checks", (plots.coordinate_checks, report.coordchecks,
                                               out / "plots" / "coordinate_checks")))
    paths = parallel_map(_call, [job for _, _, job in jobs], workers)
    figures: dict[str, dict[str, Path]] = {}
    for (title, name, _), path in zip(jobs, paths):
        figures.setdefault(title, {})[name] = path
    path = out / "report.md"
    path.write_text(markdown(report, figures, out))
    (out / "fits.json").write_text(json.dumps(plain(report_dict(report)), indent=2, allow_nan=False) + "\n")
    write_exports(report.exported or report.tables, out)  # both losses, whichever the fits read
    return path


def _call(fn, *args):
    return fn(*args)
