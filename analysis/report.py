"""The full analysis of a results store: every fit per structure, comparisons, plots and a Markdown report.

Structures are compared within an experiment (model family / data set). Per structure: the loss frontier
(approach 1), isoFLOP optima (approach 2), the parametric law (approach 3), held-out-budget checks, and
against dense the compute multiplier and exponent difference; per experiment the Einsum taxonomy trends
and learning-rate transfer. A fit that cannot be made for one structure is reported with its reason;
only when no fit at all succeeds does the analysis raise.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.bootstrap import DEFAULT_LEVEL, DEFAULT_REPLICATES, Interval, check_settings
from analysis.compare import TaxonomyTrend, compute_multiplier, exponent_difference, taxonomy_trends
from analysis.errors import AnalysisError
from analysis.extrapolate import frontier_holdout, isoflop_holdout
from analysis.frontier import FrontierFit, fit_frontier
from analysis.inputs import best_lr_runs, frontier_curves, isoflop_points, seed_noise
from analysis.isoflop import IsoflopFit, fit_isoflop
from analysis.load import RunTable
from analysis.lr_transfer import lr_curves, lr_drift, lr_sweeps
from analysis.noise import SeedNoise
from analysis.parallel import parallel_map
from analysis.parametric import ParametricFit, fit_parametric
from analysis.taxonomy import coordinates

DENSE = "dense"
DENSE_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0)  # dense as an einsum: low rank with rho = 1
EXCLUDED_SHOWN = 30


@dataclass
class StructureResult:
    """Everything fitted for one structure (label) of one experiment."""

    label: str
    runs: int
    params_range: tuple[float, float]
    n_eff_range: tuple[float, float]
    omega: float | None = None
    psi: float | None = None
    nu: float | None = None
    frontier: FrontierFit | None = None
    isoflop: IsoflopFit | None = None
    parametric: ParametricFit | None = None
    holdout: pd.DataFrame = field(default_factory=pd.DataFrame)
    multiplier: Interval | None = None
    d_alpha: Interval | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def any_fit(self) -> bool:
        return any(f is not None for f in (self.frontier, self.isoflop, self.parametric))


@dataclass
class ExperimentResult:
    """One family/data set: its structures, dense comparisons, taxonomy trends and LR transfer."""

    name: str
    structures: dict[str, StructureResult]
    reference_flops: float | None
    lr_sweeps: pd.DataFrame
    lr_drift: pd.DataFrame
    trends: list[TaxonomyTrend]
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    source: str
    table: RunTable
    experiments: list[ExperimentResult]
    replicates: int
    seed: int
    level: float
    coordchecks: dict[str, pd.DataFrame] = field(default_factory=dict)  # name -> scaling.coordcheck's coord.csv


def _fit_seed(base: int, *parts: str) -> int:
    """An independent, reproducible seed per fit (so paired replicates of two structures are independent)."""
    return int(np.random.SeedSequence([base, zlib.crc32("/".join(parts).encode())]).generate_state(1)[0])


def _ordered(labels: list[str]) -> list[str]:
    return sorted(labels, key=lambda lab: (lab != DENSE, lab))


def _analyse_structure(curves: pd.DataFrame, runs: pd.DataFrame, experiment: str, label: str,
                       fallback_noise: SeedNoise | None, replicates: int, seed: int, level: float) -> StructureResult:
    """Every fit of one structure: its evaluation curves and its runs (one job of the parallel map)."""
    res = StructureResult(label, len(runs), (float(runs["params"].min()), float(runs["params"].max())),
                          (float(runs["n_eff"].min()), float(runs["n_eff"].max())))
    first = runs.iloc[0]
    if first["omega"] is not None and pd.notna(first["omega"]):
        res.omega, res.psi, res.nu = float(first["omega"]), float(first["psi"]), float(first["nu"])
    elif label == DENSE:
        c = coordinates(DENSE_THETA)
        res.omega, res.psi, res.nu = c.omega, c.psi, c.nu
    noise = seed_noise(runs) or fallback_noise
    points = isoflop_points(runs)
    best = best_lr_runs(runs)
    kw = {"replicates": replicates, "level": level}
    holdouts = []
    try:
        res.frontier = fit_frontier(curves, noise, seed=_fit_seed(seed, experiment, label, "frontier"), **kw)
        holdouts.append(frontier_holdout(curves, noise, seed=_fit_seed(seed, experiment, label, "fh"), **kw))
    except AnalysisError as err:
        res.errors["frontier"] = str(err)
    try:
        res.isoflop = fit_isoflop(points, noise, seed=_fit_seed(seed, experiment, label, "isoflop"), **kw)
        holdouts.append(isoflop_holdout(points, res.isoflop, noise, seed=_fit_seed(seed, experiment, label, "ih"),
                                        **kw))
    except AnalysisError as err:
        res.errors["isoflop"] = str(err)
    try:
        res.parametric = fit_parametric(best["n_eff"], best["tokens"], best["final_val_loss"],
                                        seed=_fit_seed(seed, experiment, label, "parametric"), **kw)
    except AnalysisError as err:
        res.errors["parametric"] = str(err)
    if holdouts:
        res.holdout = pd.concat(holdouts, ignore_index=True)
    return res


def _compare(name: str, runs: pd.DataFrame, structures: dict[str, StructureResult]) -> ExperimentResult:
    """Dense comparisons, taxonomy trends and LR transfer of one experiment's fitted structures."""
    notes = []
    reference = None
    dense = structures.get(DENSE)
    if dense is None or dense.frontier is None:
        notes.append("no dense frontier in this experiment: compute multipliers and exponent differences "
                     "need one")
    else:
        reference = float(runs.loc[runs["label"] == DENSE, "flops"].max())
        for label, res in structures.items():
            if label != DENSE and res.frontier is not None:
                res.multiplier = compute_multiplier(res.frontier, dense.frontier, reference)
                res.d_alpha = exponent_difference(res.frontier, dense.frontier)
    tax = pd.DataFrame([{"label": s.label, "omega": s.omega, "psi": s.psi, "nu": s.nu}
                        for s in structures.values() if s.omega is not None and s.frontier is not None])
    trends = []
    if len(tax) and any(lab.startswith("einsum") for lab in tax["label"]):
        trends = taxonomy_trends(tax, {k: s.frontier for k, s in structures.items() if s.frontier is not None})
    sweeps = lr_sweeps(runs)
    return ExperimentResult(name, structures, reference, sweeps, lr_drift(sweeps), trends, notes)


def analyse(table: RunTable, source: str = "", replicates: int = DEFAULT_REPLICATES, seed: int = 0,
            level: float = DEFAULT_LEVEL, workers: int | None = None,
            coordchecks: dict[str, pd.DataFrame] | None = None) -> Report:
    """Fit everything the runs allow (structures in parallel over `workers` processes, None: all cores).

    `coordchecks` (from load.load_coordchecks) are carried along to be plotted.

    Raises AnalysisError only if not a single fit succeeds.
    """
    check_settings(replicates, level)
    jobs, keys = [], []
    groups = {name: runs for name, runs in table.runs.groupby("experiment", sort=True)}
    for name, runs in groups.items():
        fallback = seed_noise(runs)
        for label in _ordered(list(runs["label"].unique())):
            mine = runs[runs["label"] == label]
            jobs.append((frontier_curves(table, mine), mine, name, label, fallback, replicates, seed, level))
            keys.append((name, label))
    results = parallel_map(_analyse_structure, jobs, workers)
    experiments = []
    for name, runs in groups.items():
        structures = {label: res for (exp, label), res in zip(keys, results) if exp == name}
        experiments.append(_compare(name, runs, structures))
    if not any(s.any_fit() for e in experiments for s in e.structures.values()):
        detail = "; ".join(f"{e.name} {s.label} {fit}: {msg}" for e in experiments for s in e.structures.values()
                           for fit, msg in s.errors.items())
        raise AnalysisError(f"no fit could be made from {source or 'these runs'}: {detail}")
    return Report(source, table, experiments, replicates, seed, level, coordchecks or {})


# ---------------------------------------------------------------- writing


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _iv(iv: Interval | None, spec: str = ".3g") -> str:
    return "–" if iv is None else iv.fmt(spec)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _plot_jobs(exp: ExperimentResult, table: RunTable, plot_dir: Path) -> list[tuple[str, tuple]]:
    """(figure name, (plot function, *arguments)) for every figure this experiment's results support."""
    runs = table.runs[table.runs["experiment"] == exp.name]
    stem = plot_dir / _slug(exp.name)
    structures = exp.structures
    jobs: list[tuple[str, tuple]] = []
    frontier_fits = {lab: s.frontier for lab, s in structures.items() if s.frontier is not None}
    if frontier_fits:
        jobs.append(("loss frontiers", (plots.frontiers, frontier_fits, exp.name, Path(f"{stem}_frontiers"))))
    curves = {lab: frontier_curves(table, runs[runs["label"] == lab]) for lab in structures}
    dense = DENSE if DENSE in frontier_fits else None
    jobs.append(("loss vs FLOPs", (plots.loss_vs_flops, curves, frontier_fits, dense, exp.name,
                                   Path(f"{stem}_loss_vs_flops"))))
    if exp.reference_flops is not None and len(frontier_fits) > 1:
        jobs.append(("compute multiplier", (plots.multipliers, frontier_fits, DENSE, exp.name,
                                            Path(f"{stem}_multiplier"))))
    iso = {lab: s.isoflop for lab, s in structures.items() if s.isoflop is not None}
    if iso:
        jobs.append(("isoFLOP curves", (plots.isoflop_curves, iso, exp.name, Path(f"{stem}_isoflop"))))
        jobs.append(("N*(C)", (plots.optimal_size, iso, exp.name, Path(f"{stem}_nstar"))))
    if exp.trends:
        rows = pd.DataFrame([{"label": s.label, "omega": s.omega, "psi": s.psi, "nu": s.nu,
                              "alpha": s.frontier.params["alpha"].value, "lo": s.frontier.params["alpha"].lo,
                              "hi": s.frontier.params["alpha"].hi}
                             for s in structures.values() if s.omega is not None and s.frontier is not None])
        jobs.append(("Einsum taxonomy", (plots.taxonomy, rows, exp.name, Path(f"{stem}_taxonomy"))))
    if len(exp.lr_sweeps):
        jobs.append(("LR sweeps", (plots.lr_sweeps, lr_curves(runs), exp.lr_sweeps, exp.name,
                                   Path(f"{stem}_lr_sweeps"))))
        jobs.append(("LR vs width", (plots.lr_vs_width, exp.lr_sweeps, exp.name, Path(f"{stem}_lr_vs_width"))))
    return jobs


def _call(fn, *args):
    return fn(*args)


def _experiment_markdown(exp: ExperimentResult, figures: dict[str, Path], out: Path, level: float) -> list[str]:
    pct = f"{level:.0%}"
    lines = [f"## Experiment `{exp.name}`", ""]
    structures = exp.structures
    lines += [f"{sum(s.runs for s in structures.values())} runs, {len(structures)} structures. "
              f"Intervals are {pct} bootstrap percentile intervals.", ""]
    lines += [f"- {n}" for n in exp.notes] + ([""] if exp.notes else [])

    ref = f"C = {exp.reference_flops:.3g}" if exp.reference_flops else "the largest dense budget"
    lines += ["### Loss frontier (approach 1): L(C) = E + A C^-alpha", ""]
    rows = []
    for s in structures.values():
        f = s.frontier
        rows.append([s.label, s.runs, f"{s.params_range[0]:.3g}–{s.params_range[1]:.3g}",
                     f"{s.n_eff_range[0]:.3g}–{s.n_eff_range[1]:.3g}",
                     _iv(f.params["alpha"]) if f else "not fitted", _iv(f.params["E"]) if f else "–",
                     f"{f.params['A'].value:.3g}" if f else "–", _iv(s.d_alpha), _iv(s.multiplier),
                     f"{f.noise.sigma:.4f} ({f.noise.source})" if f else "–"])
    lines += _md_table(["structure", "runs", "params (raw)", "N_eff", "alpha", "E", "A", "alpha − alpha_dense",
                        f"compute multiplier vs dense at {ref}", "seed noise sigma(log L)"], rows)
    lines += _figures(figures, ("loss frontiers", "loss vs FLOPs", "compute multiplier"), out)

    lines += ["### IsoFLOP optima (approach 2): N* ~ C^a, D* ~ C^b", ""]
    rows = []
    for s in structures.values():
        f = s.isoflop
        if f is None:
            rows.append([s.label, "not fitted", "–", "–", "–", "–", "–", "–"])
            continue
        used = f.budgets[f.budgets["used"]]
        top = used.iloc[-1]
        rows.append([s.label, len(used), len(f.budgets) - len(used), _iv(f.a), _iv(f.b),
                     f"{top['n_star']:.3g} [{top['n_star_lo']:.3g}, {top['n_star_hi']:.3g}] at C = {top['flops']:.3g}",
                     f"{top['params_star']:.3g}", f.noise.source])
    lines += _md_table(["structure", "budgets used", "budgets dropped", "a", "b", "N*_eff (largest used budget)",
                        "raw params at N*", "noise from"], rows)
    lines += _figures(figures, ("isoFLOP curves", "N*(C)"), out)

    lines += ["### Parametric fit (approach 3): L(N, D) = E + A/N^alpha + B/D^beta", "",
              "N is the effective parameter count (training FLOPs per token / 6); a = beta/(alpha+beta) is the "
              "exponent of the compute-optimal N_opt ~ C^a.", ""]
    rows = []
    for s in structures.values():
        p = s.parametric
        if p is None:
            rows.append([s.label, "not fitted"] + ["–"] * 6)
            continue
        rows.append([s.label, p.n_points] + [_iv(p.params[k]) for k in ("E", "A", "B", "alpha", "beta", "a")])
    lines += _md_table(["structure", "runs", "E", "A", "B", "alpha", "beta", "a = beta/(alpha+beta)"], rows)

    lines += ["### Extrapolation check (largest budgets held out)", ""]
    rows = []
    for s in structures.values():
        for r in s.holdout.itertuples():
            what = "L*(C)" if r.fit == "frontier" else "N*(C)"
            pred = "–" if not np.isfinite(r.predicted) else f"{r.predicted:.4g} [{r.lo:.4g}, {r.hi:.4g}]"
            inside = "–" if r.inside is None else ("yes" if r.inside else "no")
            err = "–" if not np.isfinite(r.rel_error) else f"{r.rel_error:+.1%}"
            rows.append([s.label, what, r.held_out, f"{r.flops:.3g}", pred, f"{r.observed:.4g}", err, inside,
                         r.note])
    lines += ["Refit without the largest 1 or 2 budgets; the interval is for the held-out measurement (the refit's "
              "bootstrap predictions with that measurement's own noise).", ""]
    lines += _md_table(["structure", "quantity", "budgets held out", "C", "predicted", "observed", "error",
                        "inside interval", "note"], rows) if rows else ["No fit to check.", ""]

    if exp.trends:
        lines += ["### Einsum taxonomy: frontier exponent vs (omega, psi, nu)", ""]
        rows = [[s.label, f"{s.omega:.3g}", f"{s.psi:.3g}", f"{s.nu:.3g}", _iv(s.frontier.params["alpha"])]
                for s in structures.values() if s.omega is not None and s.frontier is not None]
        lines += _md_table(["structure", "omega", "psi", "nu", "alpha"], rows)
        lines += _md_table(["coordinate", "d alpha / d coordinate", "structures"],
                           [[t.coordinate, _iv(t.slope), t.structures] for t in exp.trends])
        lines += _figures(figures, ("Einsum taxonomy",), out)

    if len(exp.lr_sweeps):
        lines += ["### Learning-rate transfer", ""]
        rows = []
        for r in exp.lr_drift.itertuples():
            sw = exp.lr_sweeps[(exp.lr_sweeps["label"] == r.label)
                               & (exp.lr_sweeps["parametrization"] == r.parametrization)].sort_values("width")
            per_width = ", ".join(f"{w:g}: {lr:.3g}{'*' if e else ''}" for w, lr, e in
                                  zip(sw["width"], sw["lr_star"], sw["at_edge"]))
            rows.append([r.label, r.parametrization, per_width, f"{r.factor_per_doubling:.3g}x",
                         f"{r.lr_star_max / r.lr_star_min:.3g}x"])
        lines += _md_table(["structure", "parametrization", "lr* per width (* = sweep edge)",
                            "lr* change per width doubling", "lr* max/min"], rows)
        lines += _figures(figures, ("LR vs width", "LR sweeps"), out)

    problems = [(s.label, fit, msg) for s in structures.values() for fit, msg in s.errors.items()]
    problems += [(s.label, "isoflop", n) for s in structures.values() if s.isoflop for n in s.isoflop.notes]
    problems += [(s.label, "frontier", n) for s in structures.values() if s.frontier for n in s.frontier.notes]
    problems += [(s.label, "parametric", n) for s in structures.values() if s.parametric for n in s.parametric.notes]
    if problems:
        lines += ["### Notes", ""] + [f"- {lab} / {fit}: {msg}" for lab, fit, msg in problems] + [""]
    return lines


def _figures(figures: dict[str, Path], names: tuple[str, ...], out: Path) -> list[str]:
    lines = [f"![{n}]({figures[n].relative_to(out).as_posix()})" for n in names if n in figures]
    return lines + [""] if lines else []


def markdown(report: Report, figures: dict[str, dict[str, Path]], out: Path) -> str:
    table = report.table
    lines = ["# Scaling-law report", "", f"Source: `{report.source}`. {len(table.runs)} runs used; "
             f"{table.exclusion_note()}. Bootstrap: {report.replicates} replicates per fit, seed {report.seed}.", ""]
    for exp in report.experiments:
        lines += _experiment_markdown(exp, figures.get(exp.name, {}), out, report.level)
    if report.coordchecks:
        lines += ["## Coordinate checks", "", "Activation-update size per layer against width, from "
                  f"`python -m scaling.coordcheck` ({', '.join(report.coordchecks)}).", ""]
        lines += _figures(figures.get("", {}), ("coordinate checks",), out)
    lines += ["## Excluded runs", ""]
    if table.excluded.empty:
        lines += ["None.", ""]
    else:
        shown = table.excluded.head(EXCLUDED_SHOWN)
        lines += _md_table(["run", "status", "reason"], [[r.run_id, r.status, r.reason] for r in shown.itertuples()])
        if len(table.excluded) > EXCLUDED_SHOWN:
            lines += [f"... and {len(table.excluded) - EXCLUDED_SHOWN} more: see excluded.csv", ""]
    return "\n".join(lines)


def report_dict(report: Report) -> dict:
    """Every fitted number, for machines (fits.json)."""
    exps = {}
    for exp in report.experiments:
        exps[exp.name] = {
            "reference_flops": exp.reference_flops,
            "structures": {lab: {
                "runs": s.runs, "params_range": s.params_range, "n_eff_range": s.n_eff_range,
                "omega": s.omega, "psi": s.psi, "nu": s.nu,
                "frontier": s.frontier.to_dict() if s.frontier else None,
                "isoflop": s.isoflop.to_dict() if s.isoflop else None,
                "parametric": s.parametric.to_dict() if s.parametric else None,
                "compute_multiplier": s.multiplier.to_dict() if s.multiplier else None,
                "alpha_minus_dense": s.d_alpha.to_dict() if s.d_alpha else None,
                "holdout": s.holdout.to_dict(orient="records"), "errors": s.errors,
            } for lab, s in exp.structures.items()},
            "taxonomy_trends": {t.coordinate: t.slope.to_dict() for t in exp.trends},
            "lr_sweeps": exp.lr_sweeps.to_dict(orient="records"),
            "lr_drift": exp.lr_drift.to_dict(orient="records"),
            "notes": exp.notes,
        }
    return {"source": report.source, "runs_used": len(report.table.runs),
            "runs_excluded": len(report.table.excluded), "replicates": report.replicates, "seed": report.seed,
            "level": report.level, "experiments": exps}


def write_report(report: Report, out: str | Path, workers: int | None = None) -> Path:
    """Write report.md, fits.json, runs.csv, excluded.csv and plots/ (PNG + PDF) under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(exp.name, name, job) for exp in report.experiments
            for name, job in _plot_jobs(exp, report.table, out / "plots")]
    if report.coordchecks:
        jobs.append(("", "coordinate checks", (plots.coordinate_checks, report.coordchecks,
                                               out / "plots" / "coordinate_checks")))
    paths = parallel_map(_call, [job for _, _, job in jobs], workers)
    figures: dict[str, dict[str, Path]] = {}
    for (exp, name, _), path in zip(jobs, paths):
        figures.setdefault(exp, {})[name] = path
    path = out / "report.md"
    path.write_text(markdown(report, figures, out))
    (out / "fits.json").write_text(json.dumps(_plain(report_dict(report)), indent=2, allow_nan=False) + "\n")
    report.table.runs.to_csv(out / "runs.csv", index=False)
    report.table.excluded.to_csv(out / "excluded.csv", index=False)
    return path


def _plain(obj: object) -> object:
    """JSON-ready copy: numpy scalars become Python ones, non-finite floats null, other objects strings."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)) or obj is None:
        return None if obj is None else bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj if isinstance(obj, str) else str(obj)
