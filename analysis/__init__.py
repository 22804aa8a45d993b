"""Analysis of scaling-law runs: load results, fit compute-optimal frontiers per structure, compare, plot, report.

The Python API mirrors the CLI (`python -m analysis ...`):

    table = load_results("results")                      # tidy runs / evals / excluded tables
    tables = load_sweeps("results", ["btt_gpt2"])          # one table per sweep, labelled from its manifest
    report = analyse(tables); write_report(report, "out")  # = `python -m analysis report --sweep btt_gpt2`
    report_frame(report)                                   # every headline number: a tidy DataFrame
    read_exports("docs/results/quickstart")                # a written report's tables, to re-analyse
    fit_parametric(n, d, loss)                           # approach 3 (= fit-parametric on arrays)
    parametric_from_table(df, "params", "loss", flops_col="flops", run_col="run")  # = fit-parametric --csv
    frontier_from_table(df, "flops", "loss", run_col="run")          # = fit-frontier --csv
    isoflop_from_table(df, "params", "loss", flops_col="flops", lr_col="lr", loss_noise=0.002)  # = isoflop --csv

Every fit of a report carries a status (analysis.fit.diagnostics: ok / weak / failed with reasons).
"""

from analysis.fit.bootstrap import Interval
from analysis.fit.budgets import budget_grid, read_at_budgets
from analysis.fit.compare import compute_multiplier, exponent_difference, taxonomy_trends
from analysis.fit.diagnostics import FitStatus
from analysis.errors import AnalysisError
from analysis.fit.extrapolate import frontier_holdout, isoflop_holdout
from analysis.fit.frontier import FrontierFit, fit_frontier
from analysis.fit.isoflop import IsoflopFit, fit_isoflop
from analysis.fit.hparams import best_over_hparams
from analysis.io.load import RunRecord, RunTable, load_coordchecks, load_results, load_sweeps, table_from_records
from analysis.fit.lr_transfer import lr_drift, lr_sweeps, optimal_lr
from analysis.fit.parametric import ParametricFit, fit_parametric
from analysis.io.exports import read_exports
from analysis.report.build import Report, analyse, report_frame
from analysis.report.write import write_report
from analysis.fit.tables import frontier_from_table, isoflop_from_table, parametric_from_table
from analysis.fit.taxonomy import coordinates

__all__ = [
    "AnalysisError", "FitStatus", "FrontierFit", "Interval", "IsoflopFit", "ParametricFit", "Report", "RunRecord",
    "RunTable", "analyse", "best_over_hparams", "budget_grid", "compute_multiplier", "coordinates",
    "exponent_difference", "fit_frontier", "fit_isoflop", "fit_parametric", "frontier_from_table",
    "frontier_holdout", "isoflop_from_table", "isoflop_holdout", "load_coordchecks", "load_results", "load_sweeps",
    "lr_drift", "lr_sweeps", "optimal_lr", "parametric_from_table", "read_at_budgets", "read_exports",
    "report_frame", "table_from_records", "taxonomy_trends", "write_report",
]
