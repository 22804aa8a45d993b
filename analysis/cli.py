"""`python -m analysis {report, fit-parametric, fit-frontier, isoflop}`.

Input the analysis cannot use (AnalysisError) is printed as one `error:` line on stderr with exit status 2,
like an argparse usage error, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from analysis.bootstrap import DEFAULT_LEVEL, DEFAULT_REPLICATES, Interval
from analysis.errors import AnalysisError
from analysis.tables import column, frontier_from_table, isoflop_from_table, parametric_from_table, read_table


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--replicates", type=int, default=DEFAULT_REPLICATES, help="bootstrap replicates per fit")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--level", type=float, default=DEFAULT_LEVEL, help="interval level (default 0.95)")


def _csv_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", required=True, help="table with one row per run (or per evaluation point)")
    p.add_argument("--loss-col", required=True)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    _common(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("report", help="full Markdown report with plots from a results store")
    src = rep.add_mutually_exclusive_group(required=True)
    src.add_argument("--results", help="results root holding runs/<run_id>/")
    src.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from a wandb project instead")
    rep.add_argument("--out", required=True, help="directory for report.md, fits.json and plots/")
    rep.add_argument("--coordcheck", nargs="*", default=[], metavar="DIR",
                     help="coordcheck.out folders (or coord.csv files) of `python -m scaling.coordcheck` to plot")
    rep.add_argument("--workers", type=int, default=None, help="processes for fits and plots (default: all cores)")
    _common(rep)

    par = sub.add_parser("fit-parametric", help="approach 3: L(N, D) = E + A/N^alpha + B/D^beta")
    _csv_args(par)
    par.add_argument("--params-col", required=True)
    tok = par.add_mutually_exclusive_group(required=True)
    tok.add_argument("--tokens-col")
    tok.add_argument("--flops-col", help="training FLOPs; tokens = FLOPs / (6 params)")
    par.add_argument("--at-flops", type=float, nargs="*", help="budgets to allocate (default: the largest run's)")

    fr = sub.add_parser("fit-frontier", help="approach 1: lower envelope and L(C) = E + A C^-alpha")
    _csv_args(fr)
    fr.add_argument("--flops-col", required=True)
    fr.add_argument("--run-col", help="rows sharing this column form one run's evaluation curve")

    iso = sub.add_parser("isoflop", help="approach 2: N*(C) per budget and N* ~ C^a")
    _csv_args(iso)
    iso.add_argument("--params-col", required=True)
    budget = iso.add_mutually_exclusive_group(required=True)
    budget.add_argument("--flops-col")
    budget.add_argument("--tokens-col", help="training tokens; FLOPs = 6 params tokens")
    return parser


def _line(name: str, iv: Interval) -> str:
    return f"  {name:<24}{iv.fmt('.4g')}"


def _parametric(args: argparse.Namespace) -> str:
    df = read_table(args.csv)
    fit = parametric_from_table(df, args.params_col, args.loss_col, args.tokens_col, args.flops_col,
                                args.replicates, args.seed, args.level)
    n = column(df, args.params_col, "--params-col")
    flops = column(df, args.flops_col, "--flops-col") if args.flops_col else 6 * n * column(df, args.tokens_col,
                                                                                             "--tokens-col")
    budgets = args.at_flops or [float(np.nanmax(flops))]
    alloc = {f"{c:.6g}": {k: v.to_dict() for k, v in fit.optimal_allocation(c).items()} for c in budgets}
    if args.json:
        return json.dumps({**fit.to_dict(), "allocation": alloc}, indent=2)
    pct = f"{fit.level:.0%}"
    out = [f"L(N, D) = E + A/N^alpha + B/D^beta on {fit.n_points} runs ({pct} intervals, {len(fit.replicates)} "
           "bootstrap replicates)"]
    out += [_line(k, fit.params[k]) for k in ("E", "A", "B", "alpha", "beta")]
    out += ["compute-optimal allocation (C = 6 N D): N_opt ~ C^a, D_opt ~ C^b",
            _line("a = beta/(alpha+beta)", fit.params["a"]), _line("b = alpha/(alpha+beta)", fit.params["b"])]
    for c in budgets:
        opt = fit.optimal_allocation(c)
        out += [f"  at C = {c:.4g}:", _line("N_opt", opt["n_opt"]), _line("D_opt", opt["d_opt"])]
    out += [f"note: {n}" for n in fit.notes]
    return "\n".join(out)


def _frontier(args: argparse.Namespace) -> str:
    fit = frontier_from_table(read_table(args.csv), args.flops_col, args.loss_col, args.run_col, args.replicates,
                              args.seed, args.level)
    if args.json:
        return json.dumps(fit.to_dict(), indent=2)
    out = [f"L(C) = E + A C^-alpha on {len(fit.envelope)} envelope points ({fit.level:.0%} intervals, "
           f"{len(fit.replicates)} replicates; seed noise {fit.noise.sigma:.4g} from {fit.noise.source})"]
    out += [_line(k, fit.params[k]) for k in ("E", "A", "alpha")]
    out += [f"note: {n}" for n in fit.notes]
    return "\n".join(out)


def _isoflop(args: argparse.Namespace) -> str:
    fit = isoflop_from_table(read_table(args.csv), args.params_col, args.loss_col, args.flops_col, args.tokens_col,
                             args.replicates, args.seed, args.level)
    if args.json:
        return json.dumps(fit.to_dict(), indent=2, default=str)
    out = [f"N* ~ C^a over {int(fit.budgets['used'].sum())} budgets ({fit.level:.0%} intervals; noise "
           f"{fit.noise.sigma:.4g} from {fit.noise.source})", _line("a (N*)", fit.a), _line("b (D* = C/6N*)", fit.b),
           "  budget        sizes  N*                              D*          L*      status"]
    for r in fit.budgets.itertuples():
        nstar = "–" if not np.isfinite(r.n_star) else f"{r.n_star:.4g} [{r.n_star_lo:.4g}, {r.n_star_hi:.4g}]"
        dstar = "–" if not np.isfinite(r.d_star) else f"{r.d_star:.4g}"
        loss = "–" if not np.isfinite(r.loss_star) else f"{r.loss_star:.4g}"
        out.append(f"  {r.flops:<13.4g} {r.points:<6} {nstar:<31} {dstar:<11} {loss:<7} {r.note or 'used'}")
    out += [f"note: {n}" for n in fit.notes]
    return "\n".join(out)


def _report(args: argparse.Namespace) -> str:
    from analysis.load import load_coordchecks, load_results
    from analysis.report import analyse, write_report

    existing = next((p for p in [Path(args.out), *Path(args.out).parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():  # fail now, not after the whole analysis
        raise AnalysisError(f"--out {args.out}: {existing} is a file, not a directory; pass a directory path")
    if args.wandb:
        from analysis.wandb_source import load_wandb
        table, source = load_wandb(args.wandb), f"wandb:{args.wandb}"
    else:
        table, source = load_results(args.results), str(args.results)
    checks = load_coordchecks(args.coordcheck)
    report = analyse(table, source, args.replicates, args.seed, args.level, workers=args.workers, coordchecks=checks)
    path = write_report(report, args.out, workers=args.workers)
    return f"{table.exclusion_note()}\nwrote {path}"


COMMANDS = {"report": _report, "fit-parametric": _parametric, "fit-frontier": _frontier, "isoflop": _isoflop}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(COMMANDS[args.command](args))
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
