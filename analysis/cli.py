"""`python -m analysis {report, plan-next, fit-parametric, fit-frontier, isoflop, coverage, docs-tables}`.

Input the analysis cannot use (AnalysisError), and an output folder that cannot be written (read-only, immutable,
full), is printed as one `error:` line on stderr with exit status 2, like an argparse usage error, never as a
traceback; the arguments it names are named as this command's flags.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import NoReturn, Sequence

import numpy as np
import pandas as pd

from analysis.fit import coverage
from analysis.fit.bootstrap import DEFAULT_LEVEL, DEFAULT_REPLICATES, Interval
from analysis.fit.diagnostics import DEFAULT_MAX_FACTOR
from analysis.errors import AnalysisError
from analysis.fit.precision import precision_check
from analysis.io.exports import merged_tables, plain, read_exports, write_exports
from analysis.io.load import load_coordchecks, load_sweeps
from analysis.io.metric import METRICS
from analysis.io.wandb_source import load_wandb
from analysis.plan_next import check_budgets, check_out, first_round, plan_next, summary, sweep_text
from analysis.report import docs_tables, plots, to_wandb
from analysis.report.build import PROTOCOLS, analyse
from analysis.report.parallel import available_cores
from analysis.report.markdown import verdict_text
from analysis.report.write import write_report
from scaling.config.compose import SWEEPS_DIR
from scaling.config.schema import LoggerConfig
from scaling.process import log_to_console
from scaling.store.results import DirectoryError, atomic_write_bytes, checked_root, write_error
from analysis.fit.tables import (
    column, frontier_from_table, groups, isoflop_from_table, parametric_from_table, read_table,
)

# Library arguments whose flag is not the argument's name with dashes (loss_col: --loss-col).
DOCS_WITH_TABLES = ("README.md", "docs/results.md")
FLAGS = {"max_factor": "--max-interval-factor", "names": "--sweep", "paths": "--coordcheck", "project": "--wandb",
         "results_root": "--results"}


# argparse reads only -1 and -2.5 as negative numbers (values), so `--at-flops -1e20` or `--cells -1x3` would be an
# unknown option: any argument that starts with a minus and a digit (no flag does) is a value, refused by its type.
NEGATIVE_NUMBER = re.compile(r"^-\.?\d|^-inf(inity)?$", re.IGNORECASE)


class Parser(argparse.ArgumentParser):
    """argparse with a usage error as one `error:` line (exit status 2), like the analysis's own errors; a
    negative number in any notation (-1e20, -inf) is a value, refused by its flag's range."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def _bounded(kind: type, lo: float, hi: float, want: str):
    """An argparse type: a `kind` number in [lo, hi] (`want` says so in the error)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {want}") from None
        if not (np.isfinite(value) and lo <= value <= hi):
            raise argparse.ArgumentTypeError(f"{text} is out of range: give {want}")
        return value
    return parse


COUNT = _bounded(int, 1, 10**6, "an integer from 1 to 1000000")
MOST_WORKERS = 4 * available_cores()  # processes beyond this only add memory and start-up time
WORKERS = _bounded(int, 1, MOST_WORKERS, f"an integer from 1 to {MOST_WORKERS} (4x this machine's cores)")
SEED = _bounded(int, 0, 2**32 - 1, "an integer from 0 to 4294967295")
LEVEL = _bounded(float, 1e-9, 1 - 1e-9, "a number between 0 and 1, e.g. 0.95")
POSITIVE = _bounded(float, 1e-300, 1e300, "a positive finite number")
FACTOR = _bounded(float, 1, 1e300, "a number >= 1, e.g. 3")


def CELL(text: str) -> str:
    """An argparse type: a coverage cell DECADESxSEEDS (decades a positive number, seeds an integer >= 1)."""
    decades, x, seeds = text.partition("x")
    try:
        ok = bool(x) and 0 < float(decades) <= 10 and 1 <= int(seeds) <= 1000
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"{text!r} is not DECADESxSEEDS: give decades in (0, 10] and seeds from 1 "
                                         "to 1000, e.g. 1.5x3")
    return text


def NAME(text: str) -> str:
    """An argparse type: a sweep's name, not empty."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is empty: give a sweep's name, e.g. quickstart")
    return text


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--replicates", type=COUNT, default=DEFAULT_REPLICATES, help="bootstrap replicates per fit")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the bootstrap")
    p.add_argument("--level", type=LEVEL, default=DEFAULT_LEVEL, help="interval level (default 0.95)")


def _csv_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", required=True, help="table with one row per run (or per evaluation point)")
    p.add_argument("--loss-col", required=True)
    p.add_argument("--group-col", help="one fit per value of this column (e.g. a structure label)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--out", help="directory for fits.json and plots (PNG + PDF)")
    _common(p)


def _hparam_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lr-col", help="learning rate: rows differing in it are minimised over, never averaged")
    p.add_argument("--interpolate-lr", action="store_true",
                   help="take each (budget, size)'s minimum over lr from an Akima fit in log lr")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m analysis", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("report", help="full Markdown report with plots from a results store")
    rep.add_argument("--results", help="results root holding runs/<run_id>/")
    rep.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from a wandb project instead")
    rep.add_argument("--exports", metavar="DIR", action="append",
                     help="re-analyse a written report's runs.parquet and curves.parquet (e.g. docs/results/quickstart)"
                          " without its results root; repeat, or add --results, to pool new runs with a committed "
                          "report's (a run in several is read once)")
    rep.add_argument("--out", required=True, help="directory for report.md, fits.json and plots/")
    rep.add_argument("--to-wandb", action="store_true",
                     help="also log the report to wandb: one analysis run per sweep, in the sweep's group")
    rep.add_argument("--wandb-project", default=LoggerConfig.project,
                     help="wandb project of the analysis runs (default: the runs' default, %(default)s)")
    rep.add_argument("--wandb-entity", help="wandb entity (default: yours)")
    rep.add_argument("--wandb-mode", choices=to_wandb.MODES,
                     help="online, offline or disabled (default: $WANDB_MODE, else offline)")
    rep.add_argument("--coordcheck", nargs="*", default=[], metavar="DIR",
                     help="coordcheck.out folders (or coord.csv files) of `python -m scaling.coordcheck` to plot")
    rep.add_argument("--sweep", action="append", type=NAME, metavar="NAME",
                     help="report this sweep (repeat to compare sweeps side by side; default: every sweep, each "
                          "separately)")
    rep.add_argument("--rounds", action="store_true",
                     help="read the --sweep sweeps as rounds of one experiment (a sweep and the plan-next rounds "
                          "after it), fitted together")
    rep.add_argument("--workers", type=WORKERS, default=None, help="processes for fits and plots (default: all cores)")
    rep.add_argument("--max-interval-factor", type=FACTOR, default=DEFAULT_MAX_FACTOR,
                     help="a headline interval wider than this factor (hi/lo) makes a fit weak (default 3)")
    rep.add_argument("--interpolate-lr", action="store_true",
                     help="isoFLOP: minimum over lr per (budget, size) from an Akima fit in log lr")
    rep.add_argument("--loss-noise", type=POSITIVE, metavar="SIGMA",
                     help="absolute loss noise std for every bootstrap (default: measured from repeated seeds)")
    rep.add_argument("--metric", choices=METRICS, default="val_loss",
                     help="the loss every fit reads: val_loss (default) or train_loss (each run's mean training "
                          "loss over its last 5%%)")
    rep.add_argument("--protocol", choices=PROTOCOLS, default="auto",
                     help="budgets: isoFLOP reads at every budget; fixed_epochs: every width trained the same "
                          "epochs, each run one point of its label's loss-vs-FLOPs curve (CBS's MLP comparison); "
                          "auto (default): fixed_epochs where every run trained one budget with a decaying LR")
    _common(rep)

    nxt = sub.add_parser("plan-next", help="write the next round of a sweep: sizes centred on each label's "
                         "predicted N*(C) at new FLOP budgets")
    nxt.add_argument("--sweep", required=True, type=NAME, metavar="NAME",
                     help="the first round (its results and sweep file)")
    nxt.add_argument("--budgets", required=True, type=float, nargs="+", metavar="C",
                     help="new FLOP budgets (analysis.plan_next.check_budgets names a bad one)")
    nxt.add_argument("--results", default="results", help="results root holding runs/ and sweeps/ (default results)")
    nxt.add_argument("--out", help="the new sweep file (default sweeps/NAME_next.yaml); its stem names the sweep")
    nxt.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    nxt.add_argument("--sizes", type=COUNT, default=5, help="model sizes per label and budget (default 5)")
    nxt.add_argument("--allow-weak", action="store_true",
                     help="plan labels whose size law failed too (marked weak) instead of stopping")
    nxt.add_argument("--sweep-dir", action="append", default=[], metavar="DIR",
                     help="folder holding the first round's sweep file (like the launcher's sweep_dir=)")
    nxt.add_argument("--workers", type=WORKERS, default=None, help="processes for the fits (default: all cores)")
    nxt.add_argument("--max-interval-factor", type=FACTOR, default=DEFAULT_MAX_FACTOR,
                     help="as for report: a headline interval wider than this makes a fit weak (default 3)")
    nxt.add_argument("--interpolate-lr", action="store_true", help="as for report")
    nxt.add_argument("--loss-noise", type=POSITIVE, metavar="SIGMA", help="as for report")
    _common(nxt)

    par = sub.add_parser("fit-parametric", help="approach 3: L(N, D) = E + A/N^alpha + B/D^beta")
    _csv_args(par)
    par.add_argument("--params-col", required=True)
    tok = par.add_mutually_exclusive_group(required=True)
    tok.add_argument("--tokens-col")
    tok.add_argument("--flops-col", help="training FLOPs; tokens = FLOPs / (6 params)")
    par.add_argument("--at-flops", type=POSITIVE, nargs="*", help="budgets to allocate (default: the largest run's)")
    par.add_argument("--run-col", help="rows sharing this column are one run's curve, read at every budget")
    par.add_argument("--budgets", type=POSITIVE, nargs="+", metavar="C",
                     help="with --run-col: FLOP budgets to read the curves at besides the runs' final FLOPs")
    _hparam_args(par)

    fr = sub.add_parser("fit-frontier", help="approach 1: lower envelope and L(C) = E + A C^-alpha")
    _csv_args(fr)
    fr.add_argument("--flops-col", required=True)
    fr.add_argument("--run-col", help="rows sharing this column form one run's evaluation curve")
    fr.add_argument("--loss-noise", type=POSITIVE, metavar="SIGMA", help="absolute loss noise std for the bootstrap")

    iso = sub.add_parser("isoflop", help="approach 2: N*(C) per budget and N* ~ C^a")
    _csv_args(iso)
    iso.add_argument("--params-col", required=True)
    budget = iso.add_mutually_exclusive_group(required=True)
    budget.add_argument("--flops-col")
    budget.add_argument("--tokens-col", help="training tokens; FLOPs = 6 params tokens")
    iso.add_argument("--run-col", help="rows sharing this column are one run's curve, read at every budget")
    iso.add_argument("--budgets", type=POSITIVE, nargs="+", metavar="C",
                     help="with --run-col: FLOP budgets to read the curves at besides the runs' final FLOPs")
    iso.add_argument("--seed-col", help="random seed: rows differing only in it are averaged")
    iso.add_argument("--loss-noise", type=POSITIVE, metavar="SIGMA",
                     help="absolute loss noise std for the bootstrap (as published isoFLOP studies give it)")
    _hparam_args(iso)

    cov = sub.add_parser("coverage", help="how often the pooled fit's 95%% intervals hold the truth, on simulated "
                                          "sweeps with known multipliers and exponent")
    cov.add_argument("--cells", type=CELL, nargs="+", default=list(coverage.CELLS), metavar="DECADESxSEEDS",
                     help="budget span in decades x seeds per config, e.g. 0.3x1 1.5x3 (default: %(default)s)")
    cov.add_argument("--sweeps", type=COUNT, default=200, help="simulated sweeps per cell")
    cov.add_argument("--replicates", type=COUNT, default=200, help="bootstrap replicates per fit")
    cov.add_argument("--seed", type=SEED, default=0, help="seed of the simulation")
    cov.add_argument("--out", required=True, help="directory for coverage.csv, summary.csv and coverage.md")

    pre = sub.add_parser("precision-check", help="does bf16 keep fp32's loss? mean final loss per label and "
                                                 "precision over seeds, the difference within 2 standard errors")
    src = pre.add_mutually_exclusive_group(required=True)
    src.add_argument("--results", help="results root holding runs/<run_id>/ (with --sweep)")
    src.add_argument("--exports", metavar="DIR", help="a written check's folder: its runs re-analysed")
    pre.add_argument("--sweep", type=NAME, help="with --results: the sweep with both precisions (precision_check)")
    pre.add_argument("--out", help="directory for the per-run table, curves and precision.md / precision.json")

    doc = sub.add_parser("docs-tables", help="rewrite the docs' result tables from the committed reports' fits.json")
    doc.add_argument("files", nargs="*", default=list(DOCS_WITH_TABLES), metavar="FILE",
                     help="Markdown files with <!-- results-table: DIR --> markers (default: %(default)s)")
    doc.add_argument("--check", action="store_true", help="change nothing; fail if a table is out of date")
    return parser


def _line(name: str, iv: Interval) -> str:
    return f"  {name:<24}{iv.fmt('.4g')}"


def usable_rows(df: pd.DataFrame, columns: dict[str, str | None]) -> tuple[pd.DataFrame, str | None]:
    """The rows whose value in each numeric column the fit reads ({argument: column}) is a positive finite number,
    and a note of how many rows were dropped and why (None if none were). A missing column is left to the fit
    (analysis.fit.tables.column names it)."""
    keep = pd.Series(True, index=df.index)
    reasons = []
    for argument, name in columns.items():
        if name is None or name not in df.columns:
            continue
        values = pd.to_numeric(df[name], errors="coerce")
        if values.isna().all():
            continue  # a column with no numbers at all is the fit's error to name
        empty = values.isna() & keep
        bad = ~values.isna() & ~(np.isfinite(values) & (values > 0)) & keep
        for count, why in ((int(empty.sum()), "empty or not a number"), (int(bad.sum()), "not a positive number")):
            if count:
                reasons.append(f"{count} with {name} ({FLAGS.get(argument, '--' + argument.replace('_', '-'))}) "
                               f"{why}")
        keep &= ~(empty | bad)
    if not reasons:
        return df, None
    if not keep.any():
        raise AnalysisError(f"`csv`: no row is usable ({'; '.join(reasons)}); fix the table", "csv")
    return df[keep], f"dropped {int((~keep).sum())} of {len(df)} rows: {'; '.join(reasons)}"


def _table(args: argparse.Namespace) -> pd.DataFrame:
    """--csv as a DataFrame of its usable rows; the dropped ones are counted on stderr."""
    columns = {k: getattr(args, k, None) for k in ("loss_col", "flops_col", "params_col", "tokens_col")}
    seen: dict[str, str] = {}  # column -> the first argument naming it
    for argument, name in columns.items():
        if name is not None and name in seen:
            raise AnalysisError(f"`{seen[name]}` and `{argument}` name the same column {name!r}; give each its own "
                                "column", seen[name], argument)
        seen.setdefault(name, argument)
    df, note = usable_rows(read_table(args.csv), columns)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return df


def _grouped(args: argparse.Namespace, fit_one, text_one, plot=None) -> str:
    """Fit every --group-col group; text or JSON per group, and fits.json + plots under --out."""
    tables = groups(_table(args), args.group_col)
    fits = {g: fit_one(df) for g, df in tables.items()}
    dicts = {g: f.to_dict() for g, f in fits.items()}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "fits.json").write_text(json.dumps(plain(dicts), indent=2) + "\n")
        if plot is not None:
            plot({g or args.loss_col: f for g, f in fits.items()}, out)
    if args.json:
        return json.dumps(plain(dicts if args.group_col else dicts[""]), indent=2)
    return "\n\n".join((f"[{args.group_col} = {g}]\n" if args.group_col else "") + text_one(fits[g], df)
                       for g, df in tables.items())


def _parametric(args: argparse.Namespace) -> str:
    def fit_one(df):
        return parametric_from_table(df, args.params_col, args.loss_col, args.tokens_col, args.flops_col,
                                     args.replicates, args.seed, args.level, args.lr_col, args.interpolate_lr,
                                     args.run_col, args.budgets)

    def budgets(df) -> list[float]:
        n = column(df, args.params_col, "params_col")
        flops = column(df, args.flops_col, "flops_col") if args.flops_col else 6 * n * column(
            df, args.tokens_col, "tokens_col")
        return args.at_flops or [float(np.nanmax(flops))]

    def text(fit, df) -> str:
        pct = f"{fit.level:.0%}"
        out = [f"L(N, D) = E + A/N^alpha + B/D^beta on {fit.n_points} points ({pct} intervals, "
               f"{len(fit.replicates)} bootstrap replicates)"]
        out += [_line(k, fit.params[k]) for k in ("E", "A", "B", "alpha", "beta")]
        out += ["compute-optimal allocation (C = 6 N D): N_opt ~ C^a, D_opt ~ C^b",
                _line("a = beta/(alpha+beta)", fit.params["a"]), _line("b = alpha/(alpha+beta)", fit.params["b"])]
        for c in budgets(df):
            opt = fit.optimal_allocation(c)
            out += [f"  at C = {c:.4g}:", _line("N_opt", opt["n_opt"]), _line("D_opt", opt["d_opt"])]
        out += [f"status: failed: {b}" for b in fit.at_bound] + [f"note: {n}" for n in fit.notes]
        return "\n".join(out)

    if args.json and not args.group_col:
        df = _table(args)
        fit = fit_one(df)
        alloc = {f"{c:.6g}": {k: v.to_dict() for k, v in fit.optimal_allocation(c).items()} for c in budgets(df)}
        return json.dumps({**fit.to_dict(), "allocation": alloc}, indent=2)
    return _grouped(args, fit_one, text)


def _frontier(args: argparse.Namespace) -> str:

    def fit_one(df):
        return frontier_from_table(df, args.flops_col, args.loss_col, args.run_col, args.replicates, args.seed,
                                   args.level, args.loss_noise)

    def text(fit, _df) -> str:
        out = [f"L(C) = E + A C^-alpha on {len(fit.envelope)} envelope points ({fit.level:.0%} intervals, "
               f"{len(fit.replicates)} replicates; noise {fit.noise.sigma:.4g} from {fit.noise.source})"]
        out += [_line(k, fit.params[k]) for k in ("E", "A", "alpha")]
        out += [f"status: failed: {b}" for b in fit.at_bound] + [f"note: {n}" for n in fit.notes]
        return "\n".join(out)

    def plot(fits, out):
        plots.frontiers(fits, {g for g, f in fits.items() if f.at_bound}, "FLOPs", Path(args.csv).stem,
                        out / "frontiers")

    return _grouped(args, fit_one, text, plot)


def _isoflop(args: argparse.Namespace) -> str:

    def fit_one(df):
        return isoflop_from_table(df, args.params_col, args.loss_col, args.flops_col, args.tokens_col,
                                  args.replicates, args.seed, args.level, args.run_col, args.lr_col, args.seed_col,
                                  args.loss_noise, args.interpolate_lr, budgets=args.budgets)

    def text(fit, _df) -> str:
        out = [f"N* ~ C^a over {int(fit.budgets['used'].sum())} budgets ({fit.level:.0%} intervals; noise "
               f"{fit.noise.sigma:.4g} from {fit.noise.source})", _line("a (N*)", fit.a),
               _line("b (D* = C/6N*)", fit.b),
               "  budget        sizes  N*                              D*          L*      status"]
        for r in fit.budgets.itertuples():
            nstar = "–" if not np.isfinite(r.n_star) else f"{r.n_star:.4g} [{r.n_star_lo:.4g}, {r.n_star_hi:.4g}]"
            dstar = "–" if not np.isfinite(r.d_star) else f"{r.d_star:.4g}"
            loss = "–" if not np.isfinite(r.loss_star) else f"{r.loss_star:.4g}"
            out.append(f"  {r.flops:<13.4g} {r.points:<6} {nstar:<31} {dstar:<11} {loss:<7} {r.note or 'used'}")
        out += [f"note: {n}" for n in fit.notes]
        return "\n".join(out)

    def plot(fits, out):
        title = Path(args.csv).stem
        plots.isoflop_curves(fits, title, out / "isoflop")
        plots.optimal_size(fits, title, out / "nstar")

    return _grouped(args, fit_one, text, plot)


def writable_out(out: str) -> None:
    """--out must be a folder this process can write (not a file, read-only, immutable or full)."""
    try:
        checked_root(out, write=True, field="out")
    except DirectoryError as err:
        raise AnalysisError(str(err), "out") from None


def _report(args: argparse.Namespace) -> str:

    writable_out(args.out)  # fail now, not after the whole analysis
    results = args.results is not None  # given, if empty (load_sweeps names an empty --results)
    if not (results or args.wandb or args.exports):
        raise AnalysisError("give where the runs are: --results ROOT, --exports DIR or --wandb ENTITY/PROJECT")
    if args.wandb and (results or args.exports):
        raise AnalysisError("--wandb reads every run from wandb; give it without --results and --exports")
    if (args.sweep or args.rounds) and not results:
        raise AnalysisError("--sweep and --rounds read the sweep manifests of --results; with --wandb or --exports "
                            "alone all their runs are read")
    if args.wandb:
        tables, source = {None: load_wandb(args.wandb)}, f"wandb:{args.wandb}"
    else:
        sources = [load_sweeps(args.results, args.sweep, rounds=args.rounds)] if results else []
        sources += [read_exports(d) for d in args.exports or []]
        tables = merged_tables(*sources)
        source = " + ".join(([str(args.results)] if results else []) + list(args.exports or []))
    checks = load_coordchecks(args.coordcheck)
    report = analyse(tables, source, args.replicates, args.seed, args.level, workers=args.workers,
                     coordchecks=checks, max_factor=args.max_interval_factor, interpolate_lr=args.interpolate_lr,
                     loss_noise=args.loss_noise, metric=args.metric, protocol=args.protocol)
    path = write_report(report, args.out, workers=args.workers)
    notes = [f"{name or 'runs'}: {t.exclusion_note()}" for name, t in tables.items()]
    if args.to_wandb:
        ids = to_wandb.log_report(report, Path(args.out), args.wandb_project, args.wandb_entity, args.wandb_mode)
        notes.append(f"logged {len(ids)} analysis run(s) to wandb project {args.wandb_project}: {', '.join(ids)}")
    return "\n".join(notes + verdict_text(report) + [f"wrote {path}"])


def _plan_next(args: argparse.Namespace) -> str:

    out = Path(args.out or f"sweeps/{args.sweep}_next.yaml")
    name = check_out(out, args.force, args.sweep)
    check_budgets(args.budgets, args.sizes)
    first = first_round(args.sweep, args.sweep_dir)
    tables = load_sweeps(args.results, [args.sweep])
    report = analyse(tables, str(args.results), args.replicates, args.seed, args.level, workers=args.workers,
                     max_factor=args.max_interval_factor, interpolate_lr=args.interpolate_lr,
                     loss_noise=args.loss_noise)
    plan = plan_next(report, args.results, args.sweep, args.budgets, name, args.sizes, args.allow_weak,
                     first=first)
    command = " ".join(["python -m analysis plan-next", f"--sweep {args.sweep}", "--budgets",
                        *(f"{b:g}" for b in args.budgets), f"--results {args.results}", f"--sizes {args.sizes}",
                        *(["--allow-weak"] if args.allow_weak else [])])
    text = sweep_text(plan, command)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, text.encode())
    where = "" if out.parent.resolve() == SWEEPS_DIR.resolve() else f" sweep_dir={out.parent}"
    weak = [label for label, law in plan.laws.items() if not law.status.ok]
    return "\n".join([*summary(plan), *([f"weak size laws: {', '.join(weak)}"] if weak else []), f"wrote {out}",
                      f"next: python -m scaling.launch +sweep={name}{where} dry_run=true"])


def _coverage(args: argparse.Namespace) -> str:
    writable_out(args.out)  # before the simulation, not after it
    command = (f"OMP_NUM_THREADS=1 python -m analysis coverage --cells {' '.join(args.cells)} --sweeps {args.sweeps} "
               f"--replicates {args.replicates} --seed {args.seed} --out {args.out}")
    done = []
    for i, cell in enumerate(args.cells):  # the table is rewritten after each cell
        done.append(coverage.run_cells([coverage.Cell.parse(cell)], args.sweeps, args.seed + i, args.replicates))
        path = coverage.write(pd.concat(done, ignore_index=True), Path(args.out), command)
    return coverage.summary(pd.concat(done, ignore_index=True)).to_string(index=False) + f"\nwrote {path}"


def _docs_tables(args: argparse.Namespace) -> str:
    files = [Path(f) for f in args.files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise AnalysisError(f"{', '.join(missing)}: no such file (or not a file); name Markdown files with "
                            "results-table markers")
    for f in files:
        try:
            f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise AnalysisError(f"{f}: not UTF-8 text; name Markdown files with results-table markers") from None
    stale = docs_tables.update(files, args.check)
    if args.check and stale:
        raise AnalysisError(f"{', '.join(map(str, stale))}: result tables differ from the committed reports' "
                            "fits.json; run `python -m analysis docs-tables` and commit the result")
    return f"{'out of date' if stale else 'up to date'}: " + ", ".join(map(str, stale or files))


def _precision_check(args: argparse.Namespace) -> str:
    if args.out:
        writable_out(args.out)
    if args.results is not None and not args.sweep:
        raise AnalysisError("--results needs --sweep: the sweep that trained both precisions (precision_check)")
    tables = load_sweeps(args.results, [args.sweep]) if args.exports is None else read_exports(args.exports)
    check = precision_check(pd.concat([t.runs for t in tables.values()], ignore_index=True))
    text = check.markdown()
    if args.out:
        out = Path(args.out)
        write_exports(tables, out)
        title = f"# Precision check: {', '.join(map(str, tables))}\n\n"
        atomic_write_bytes(out / "precision.md", (title + text + "\n").encode())
        atomic_write_bytes(out / "precision.json", (json.dumps(plain(check.as_dict()), indent=2) + "\n").encode())
        text += f"\nwrote {out / 'precision.md'}"
    return text


COMMANDS = {"report": _report, "plan-next": _plan_next, "fit-parametric": _parametric, "fit-frontier": _frontier,
            "isoflop": _isoflop, "coverage": _coverage, "docs-tables": _docs_tables,
            "precision-check": _precision_check}


def flag_message(err: AnalysisError) -> str:
    """The error's message with the arguments it names as flags: `group_col='x'` -> `--group-col 'x'`,
    `force=True` -> `--force`, `` `out` `` -> `--out`."""
    text = str(err)
    for name in err.arguments:
        flag = FLAGS.get(name, "--" + name.replace("_", "-"))
        text = re.sub(rf"(?<![\w-]){name}=True\b|`{name}`", flag, text)
        text = re.sub(rf"(?<![\w-]){name}=", f"{flag} ", text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a usage error already printed as one line: its exit status
        return int(done.code or 0)
    log_to_console()
    try:
        print(COMMANDS[args.command](args))
    except AnalysisError as err:
        print(f"error: {flag_message(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a write that failed after --out's check (the disk filled up, ...)
        line = write_error(err, "--out")
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    return 0
