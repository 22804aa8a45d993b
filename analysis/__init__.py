"""Analysis of scaling-law runs: load results, fit compute-optimal frontiers per structure, compare, plot, report.

The Python API mirrors the CLI (`python -m analysis ...`):

    table = load_results("results")                      # tidy runs / evals / excluded tables
    report = analyse(table); write_report(report, "out")  # = `python -m analysis report`
    fit_parametric(n, d, loss)                           # approach 3 (= fit-parametric on arrays)
    parametric_from_table(df, "params", "loss", flops_col="flops")   # = fit-parametric --csv
    frontier_from_table(df, "flops", "loss", run_col="run")          # = fit-frontier --csv
    isoflop_from_table(df, "params", "loss", flops_col="flops")      # = isoflop --csv
"""

from analysis.bootstrap import Interval
from analysis.compare import compute_multiplier, exponent_difference, taxonomy_trends
from analysis.errors import AnalysisError
from analysis.extrapolate import frontier_holdout, isoflop_holdout
from analysis.frontier import FrontierFit, fit_frontier
from analysis.isoflop import IsoflopFit, fit_isoflop
from analysis.load import RunRecord, RunTable, load_coordchecks, load_results, table_from_records
from analysis.lr_transfer import lr_drift, lr_sweeps, optimal_lr
from analysis.parametric import ParametricFit, fit_parametric
from analysis.report import Report, analyse, write_report
from analysis.tables import frontier_from_table, isoflop_from_table, parametric_from_table
from analysis.taxonomy import coordinates

__all__ = [
    "AnalysisError", "FrontierFit", "Interval", "IsoflopFit", "ParametricFit", "Report", "RunRecord", "RunTable",
    "analyse", "compute_multiplier", "coordinates", "exponent_difference", "fit_frontier", "fit_isoflop",
    "fit_parametric", "frontier_from_table", "frontier_holdout", "isoflop_from_table", "isoflop_holdout",
    "load_coordchecks", "load_results", "lr_drift", "lr_sweeps", "optimal_lr", "parametric_from_table",
    "table_from_records", "taxonomy_trends", "write_report",
]
