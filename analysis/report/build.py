"""The full analysis of a results store: every fit per label, comparisons, statuses, plots and a Markdown report.

Each sweep is analysed on its own (a run two sweeps share is in both, under each sweep's label), and within a
sweep labels are compared within an experiment (model family / data set). Per label: the loss frontier
(approach 1) against FLOPs and against measured training seconds, isoFLOP optima (approach 2, read from every
run's curve), the parametric law (approach 3), held-out-budget checks and a status per fit
(analysis.fit.diagnostics); against dense the compute multiplier and exponent difference; per experiment the pooled
compute multipliers of every label (analysis.fit.pooled, the report's headline), the Einsum taxonomy trends and
learning-rate transfer. A fit that cannot be made is reported as failed with its
reason; only when no fit at all succeeds does the analysis raise.

`metric` picks the loss every fit reads (analysis.io.metric: validation or final training loss). `protocol` picks
how labels are compared: `budgets` (isoFLOP reads of every run at every budget it passes, the default), or
`fixed_epochs` (CBS's MLP comparison: every width trained the same epochs, each run one point of its label's
loss-vs-compute curve; the pooled fit is then a horizontal shift between those curves, and the isoFLOP and
parametric fits, which need several budgets per size, are not made); `auto` picks `fixed_epochs` for an
experiment whose runs all trained one budget with a decaying LR and whose labels each have 2+ widths.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

from analysis.fit.budgets import declared_budgets
from analysis.fit.bootstrap import DEFAULT_LEVEL, DEFAULT_REPLICATES, Interval, check_settings
from analysis.fit.compare import TaxonomyTrend, compute_multiplier, exponent_difference, taxonomy_trends
from analysis.fit.diagnostics import (DEFAULT_MAX_FACTOR, FitStatus, failed, frontier_status, isoflop_status,
                                  NOT_CONVERGED, multiplier_status, parametric_status)
from analysis.errors import AnalysisError
from analysis.fit.extrapolate import frontier_holdout, isoflop_holdout
from analysis.fit.frontier import FrontierFit, fit_frontier, resolved_floor, smallest_final_flops
from analysis.fit.inputs import (best_lr_runs, final_only, fixed_epoch_points, frontier_curves, is_fixed_epochs,
                                 isoflop_points, pooled_reads, seed_noise, wall_curves)
from analysis.fit.isoflop import IsoflopFit, fit_isoflop
from analysis.io.load import RunTable
from analysis.io.metric import with_metric
from analysis.fit.lr_transfer import TRANSFER_COLS, lr_drift, lr_sweeps, transfer_comparison
from analysis.fit.noise import SeedNoise, given_noise
from analysis.report.parallel import parallel_map
from analysis.fit.parametric import ParametricFit, fit_parametric
from analysis.fit.pooled import PooledFit, fit_pooled
from analysis.fit.taxonomy import coordinates

DENSE = "dense"
DENSE_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0)  # dense as an einsum: low rank with rho = 1
FITS = ("frontier", "wall_frontier", "isoflop", "parametric")
PROTOCOLS = ("auto", "budgets", "fixed_epochs")


@dataclass
class StructureResult:
    """Everything fitted for one label of one experiment, and each fit's status."""

    label: str
    structure: str
    runs: int
    params_range: tuple[float, float]
    n_eff_range: tuple[float, float]
    omega: float | None = None
    psi: float | None = None
    nu: float | None = None
    frontier: FrontierFit | None = None
    wall_frontier: FrontierFit | None = None
    isoflop: IsoflopFit | None = None
    parametric: ParametricFit | None = None
    holdout: pd.DataFrame = field(default_factory=pd.DataFrame)
    multiplier: Interval | None = None
    wall_multiplier: Interval | None = None
    d_alpha: Interval | None = None
    status: dict[str, FitStatus] = field(default_factory=dict)  # FITS, multiplier / wall_multiplier / pooled
    notes: list[str] = field(default_factory=list)

    def any_fit(self) -> bool:
        return any(f is not None for f in (self.frontier, self.isoflop, self.parametric))


@dataclass
class ExperimentResult:
    """One sweep's family/data set: its labels, dense comparisons, taxonomy trends and LR transfer."""

    sweep: str | None
    name: str
    structures: dict[str, StructureResult]
    reference_flops: float | None
    lr_sweeps: pd.DataFrame
    lr_drift: pd.DataFrame
    trends: list[TaxonomyTrend]
    notes: list[str] = field(default_factory=list)
    pooled: PooledFit | None = None  # the joint fit of every label (status per label: structures' "pooled")
    protocol: str = "budgets"  # or "fixed_epochs" (see the module docstring)
    metric: str = "val_loss"  # the loss the fits read (analysis.io.metric)
    transfer: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(TRANSFER_COLS)))

    @property
    def title(self) -> str:
        return self.name if self.sweep is None else f"{self.sweep}: {self.name}"


@dataclass
class Report:
    source: str
    tables: dict[str | None, RunTable]  # per sweep (None: the runs were not split by sweep)
    experiments: list[ExperimentResult]
    replicates: int
    seed: int
    level: float
    coordchecks: dict[str, pd.DataFrame] = field(default_factory=dict)  # name -> scaling.coordcheck's coord.csv
    metric: str = "val_loss"  # the loss the fits read (analysis.io.metric)
    exported: dict[str | None, RunTable] | None = None  # the loaded tables, both losses (written beside the report)

    @property
    def runs_used(self) -> int:
        return int(sum(len(t.runs) for t in self.tables.values()))


def _fit_seed(base: int, *parts: str | None) -> int:
    """An independent, reproducible seed per fit (so paired replicates of two labels are independent)."""
    key = "/".join(p or "" for p in parts)
    return int(np.random.SeedSequence([base, zlib.crc32(key.encode())]).generate_state(1)[0])


def _ordered(labels: list[str]) -> list[str]:
    return sorted(labels, key=lambda lab: (lab != DENSE, lab))


def _attempt(res: StructureResult, name: str, fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except AnalysisError as err:
        res.status[name] = failed(str(err))
        return None


def exponent_fits(structures: dict[str, StructureResult]) -> dict[str, StructureResult]:
    """The labels whose frontier exponent may enter a trend: a failed frontier (a parameter on its bound) has none."""
    return {k: s for k, s in structures.items() if s.frontier is not None and s.status["frontier"].status != "failed"}


def _analyse_structure(table: RunTable, runs: pd.DataFrame, where: tuple[str | None, str, str],
                       fallback_noise: SeedNoise | None, given: SeedNoise | None, replicates: int, seed: int,
                       level: float, max_factor: float, interpolate_lr: bool,
                       fixed_epochs: bool = False) -> StructureResult:
    """Every fit of one label and its status (one job of the parallel map)."""
    label = where[2]
    res = StructureResult(label, str(runs["structure"].iloc[0]), len(runs),
                          (float(runs["params"].min()), float(runs["params"].max())),
                          (float(runs["n_eff"].min()), float(runs["n_eff"].max())))
    first = runs.iloc[0]
    if first["omega"] is not None and pd.notna(first["omega"]):
        res.omega, res.psi, res.nu = float(first["omega"]), float(first["psi"]), float(first["nu"])
    elif res.structure == DENSE:
        c = coordinates(DENSE_THETA)
        res.omega, res.psi, res.nu = c.omega, c.psi, c.nu
    noise = given or seed_noise(runs) or fallback_noise
    kw = {"replicates": replicates, "level": level}
    curves, holdouts = frontier_curves(table, runs), []
    once = final_only(runs)
    if once:
        res.notes.append(f"{len(once)} of {len(runs)} runs decay their LR to their own end (schedule "
                         f"{', '.join(sorted(set(runs.loc[runs['run_id'].isin(once), 'schedule'])))}): the isoFLOP "
                         "fit reads them at their final budget only")
    floor = None if once else resolved_floor(curves, runs.set_index("run_id")["n_eff"])
    if floor is not None and floor < smallest_final_flops(curves):
        res.notes.append(f"every curve is a valid read (constant LR): the loss frontier starts at C = {floor:.3g}, "
                         "below the smallest run's final FLOPs, from where runs larger than the smallest size hold "
                         "the envelope")
    res.frontier = _attempt(res, "frontier", fit_frontier, curves, noise, seed=_fit_seed(seed, *where, "f"),
                            floor=floor, **kw)
    if res.frontier is not None:
        holdouts.append(frontier_holdout(curves, noise, seed=_fit_seed(seed, *where, "fh"), final_only=once,
                                         declared=declared_budgets(runs, once), floor=floor, **kw))
    wall = wall_curves(table, runs)
    if wall["run_id"].nunique() < runs["run_id"].nunique():
        res.status["wall_frontier"] = failed("some runs recorded no training seconds (wall_s) with their evaluations")
    else:
        wall_floor = None if once else resolved_floor(wall, runs.set_index("run_id")["n_eff"])  # as for FLOPs
        res.wall_frontier = _attempt(res, "wall_frontier", fit_frontier, wall, noise,
                                     seed=_fit_seed(seed, *where, "w"), floor=wall_floor, **kw)
    if fixed_epochs:  # one budget per size: no isoFLOP curve, no D axis for the parametric law
        res.notes.append("fixed-epoch protocol: every width trained the same epochs, so there is one budget per "
                         "size; the isoFLOP and parametric fits are not made")
        return _statuses(res, holdouts, max_factor)
    points = isoflop_points(table, runs, interpolate_lr)
    res.isoflop = _attempt(res, "isoflop", fit_isoflop, points, noise, seed=_fit_seed(seed, *where, "i"), **kw)
    if res.isoflop is not None:
        holdouts.append(isoflop_holdout(points, res.isoflop, noise, seed=_fit_seed(seed, *where, "ih"), **kw))
    best = best_lr_runs(runs)
    res.parametric = _attempt(res, "parametric", fit_parametric, best["n_eff"], best["tokens"],
                              best["final_val_loss"], seed=_fit_seed(seed, *where, "p"), **kw)
    return _statuses(res, holdouts, max_factor)


def _statuses(res: StructureResult, holdouts: list[pd.DataFrame], max_factor: float) -> StructureResult:
    """Each made fit's status, from its intervals and the held-out checks."""
    res.holdout = pd.concat(holdouts, ignore_index=True) if holdouts else pd.DataFrame()
    if res.frontier is not None:
        res.status["frontier"] = frontier_status(res.frontier, res.holdout, max_factor)
    if res.wall_frontier is not None:
        res.status["wall_frontier"] = frontier_status(res.wall_frontier, pd.DataFrame(), max_factor)
    if res.isoflop is not None:
        res.status["isoflop"] = isoflop_status(res.isoflop, res.holdout, max_factor)
    if res.parametric is not None:
        res.status["parametric"] = parametric_status(res.parametric, max_factor)
    return res


def _compare(sweep: str | None, name: str, runs: pd.DataFrame, structures: dict[str, StructureResult],
             given: SeedNoise | None, replicates: int, seed: int, level: float) -> ExperimentResult:
    """Dense comparisons, taxonomy trends and LR transfer (bootstrapped over `given` or seed noise) of one
    experiment's fitted labels."""
    notes = []
    reference = None
    dense = structures.get(DENSE)
    if dense is None or dense.frontier is None:
        notes.append(f"no `{DENSE}` frontier in this experiment: compute multipliers and exponent differences "
                     "need one")
    else:
        reference = float(runs.loc[runs["label"] == DENSE, "flops"].max())
        wall_ref = float(pd.to_numeric(runs.loc[runs["label"] == DENSE, "wall_time_s"], errors="coerce").max())
        for label, res in structures.items():
            if label == DENSE or res.frontier is None:
                continue
            res.multiplier = compute_multiplier(res.frontier, dense.frontier, reference)
            res.d_alpha = exponent_difference(res.frontier, dense.frontier)
            res.status["multiplier"] = multiplier_status(res.multiplier, {
                f"{label}'s frontier": res.status["frontier"], f"{DENSE}'s frontier": dense.status["frontier"]})
            if res.wall_frontier is not None and dense.wall_frontier is not None and np.isfinite(wall_ref):
                res.wall_multiplier = compute_multiplier(res.wall_frontier, dense.wall_frontier, wall_ref)
                res.status["wall_multiplier"] = multiplier_status(res.wall_multiplier, {
                    f"{label}'s wall-clock frontier": res.status["wall_frontier"],
                    f"{DENSE}'s wall-clock frontier": dense.status["wall_frontier"]})
    fitted = exponent_fits(structures)
    tax = pd.DataFrame([{"label": s.label, "omega": s.omega, "psi": s.psi, "nu": s.nu}
                        for s in fitted.values() if s.omega is not None])
    trends = []
    if len(tax) and any(s.structure == "einsum" for s in structures.values()):
        trends = taxonomy_trends(tax, {k: s.frontier for k, s in fitted.items()})
    sweeps = lr_sweeps(runs)
    drift = lr_drift(sweeps)
    transfer = transfer_comparison(runs, {s.label: s.structure for s in structures.values()}, given, replicates,
                                   _fit_seed(seed, sweep, name, "lr"), level, drift)
    return ExperimentResult(sweep, name, structures, reference, sweeps, drift, trends, notes, transfer=transfer)


def _pooled(table: RunTable, runs: pd.DataFrame, exp: ExperimentResult, given: SeedNoise | None,
            replicates: int, seed: int, level: float) -> None:
    """The pooled fit of an experiment with 2+ labels (reference: dense if present), each label's status."""
    labels = _ordered(list(runs["label"].unique()))
    if len(labels) < 2:
        return
    noise = given or seed_noise(runs)
    fixed = exp.protocol == "fixed_epochs"
    reads = fixed_epoch_points(runs) if fixed else pooled_reads(table, runs)
    sigma = None if noise is None else float(np.median(noise.log_sigma(reads["loss"].to_numpy(float))))
    flops = float(runs.loc[runs["label"] == labels[0], "flops"].max())
    try:
        exp.pooled = fit_pooled(reads, labels[0], flops, sigma, replicates,
                                _fit_seed(seed, exp.sweep, exp.name, "pool"), level, isoflop=not fixed)
    except AnalysisError as err:
        exp.notes.append(f"no pooled fit: {err}")
        return
    for label, res in exp.structures.items():
        if label != exp.pooled.reference:
            res.status["pooled"] = multiplier_status(exp.pooled.multiplier(label), {}, NOT_CONVERGED)  # one rule


def analyse(tables: RunTable | Mapping[str | None, RunTable], source: str = "",
            replicates: int = DEFAULT_REPLICATES, seed: int = 0, level: float = DEFAULT_LEVEL,
            workers: int | None = None, coordchecks: dict[str, pd.DataFrame] | None = None,
            max_factor: float = DEFAULT_MAX_FACTOR, interpolate_lr: bool = False,
            loss_noise: float | None = None, metric: str = "val_loss", protocol: str = "auto") -> Report:
    """Fit everything the runs allow, per sweep (a mapping sweep -> table, from load.load_sweeps) or for one table.

    Labels are fitted in parallel over `workers` processes (None: all cores). `coordchecks` (from
    load.load_coordchecks) are carried along to be plotted. `loss_noise` (an absolute loss std) replaces the
    noise measured from repeated seeds in every bootstrap. `metric` and `protocol`: see the module docstring.
    Raises AnalysisError only if not a single fit succeeds.
    """
    check_settings(replicates, level)
    if protocol not in PROTOCOLS:
        raise AnalysisError(f"protocol={protocol!r}: must be one of {', '.join(PROTOCOLS)}", "protocol")
    if max_factor <= 1:
        raise AnalysisError(f"max_factor={max_factor}: must exceed 1 (hi / lo of an interval), e.g. 3", "max_factor")
    if loss_noise is not None and not (np.isfinite(loss_noise) and loss_noise > 0):
        raise AnalysisError(f"loss_noise={loss_noise}: must be a positive loss std, e.g. 0.002", "loss_noise")
    given = given_noise(loss_noise) if loss_noise is not None else None
    exported = dict(tables) if isinstance(tables, Mapping) else {None: tables}
    tables = {sweep: with_metric(table, metric) for sweep, table in exported.items()}
    jobs, keys, groups, fixed = [], [], {}, {}
    for sweep, table in tables.items():
        for name, runs in table.runs.groupby("experiment", sort=True):
            groups[(sweep, name)] = runs
            fixed[(sweep, name)] = protocol == "fixed_epochs" or (protocol == "auto" and is_fixed_epochs(runs))
            fallback = seed_noise(runs)
            for label in _ordered(list(runs["label"].unique())):
                mine = runs[runs["label"] == label]
                sub = RunTable(mine, table.evals[table.evals["run_id"].isin(mine["run_id"])], table.excluded.head(0))
                jobs.append((sub, mine, (sweep, name, label), fallback, given, replicates, seed, level,
                             max_factor, interpolate_lr, fixed[(sweep, name)]))
                keys.append((sweep, name))
    results = parallel_map(_analyse_structure, jobs, workers)
    experiments = []
    for (sweep, name), runs in groups.items():
        structures = {res.label: res for key, res in zip(keys, results) if key == (sweep, name)}
        experiments.append(_compare(sweep, name, runs, structures, given, replicates, seed, level))
        experiments[-1].protocol = "fixed_epochs" if fixed[(sweep, name)] else "budgets"
        experiments[-1].metric = metric
        _pooled(tables[sweep], runs, experiments[-1], given, replicates, seed, level)
    if not any(s.any_fit() for e in experiments for s in e.structures.values()) and \
            not any(e.pooled for e in experiments):  # the pooled fit alone is a report's headline
        detail = "; ".join(f"{e.title} {s.label} {fit}: {st.text()}" for e in experiments
                           for s in e.structures.values() for fit, st in s.status.items() if fit in FITS)
        raise AnalysisError(f"no fit could be made from {source or 'these runs'}: {detail}")
    return Report(source, tables, experiments, replicates, seed, level, coordchecks or {}, metric, exported)


def report_frame(report: Report) -> pd.DataFrame:
    """Every headline number of the report as one tidy table: a row per (sweep, experiment, label, quantity) with
    value, lo, hi and the status of the fit it comes from. Quantities: frontier E, A, alpha; isoflop a, b;
    parametric E, A, B, alpha, beta; multiplier, wall_multiplier, alpha_minus_dense (vs dense); pooled (the pooled
    fit's multiplier of the supported model, at the experiment's reference compute)."""
    rows = []

    def add(exp: ExperimentResult, label: str, quantity: str, iv: Interval | None, status: str | None) -> None:
        if iv is not None:
            rows.append({"sweep": exp.sweep, "experiment": exp.name, "label": label, "quantity": quantity,
                         "value": iv.value, "lo": iv.lo, "hi": iv.hi, "status": status})

    for exp in report.experiments:
        for label, s in exp.structures.items():
            def status(fit: str) -> str | None:
                return s.status[fit].status if fit in s.status else None

            for fit in ("frontier", "isoflop", "parametric"):
                obj = getattr(s, fit)
                params = {} if obj is None else (obj.params if fit != "isoflop" else {"a": obj.a, "b": obj.b})
                for name, iv in params.items():
                    add(exp, label, f"{fit}.{name}", iv, status(fit))
            add(exp, label, "multiplier", s.multiplier, status("multiplier"))
            add(exp, label, "wall_multiplier", s.wall_multiplier, status("wall_multiplier"))
            add(exp, label, "alpha_minus_dense", s.d_alpha, status("frontier"))
            if exp.pooled is not None and label in exp.pooled.labels:
                add(exp, label, "pooled", exp.pooled.multiplier(label),
                    "reference" if label == exp.pooled.reference else status("pooled"))
    return pd.DataFrame(rows, columns=["sweep", "experiment", "label", "quantity", "value", "lo", "hi", "status"])


def report_dict(report: Report) -> dict:
    """Every fitted number and status, for machines (fits.json)."""
    def fit(f):
        return f.to_dict() if f is not None else None

    exps = []
    for exp in report.experiments:
        exps.append({
            "sweep": exp.sweep, "experiment": exp.name, "reference_flops": exp.reference_flops,
            "labels": {lab: {
                "structure": s.structure, "runs": s.runs, "params_range": s.params_range,
                "n_eff_range": s.n_eff_range, "omega": s.omega, "psi": s.psi, "nu": s.nu,
                "frontier": fit(s.frontier), "wall_frontier": fit(s.wall_frontier), "isoflop": fit(s.isoflop),
                "parametric": fit(s.parametric), "compute_multiplier": fit(s.multiplier),
                "wall_multiplier": fit(s.wall_multiplier), "alpha_minus_dense": fit(s.d_alpha),
                "holdout": s.holdout.to_dict(orient="records"),
                "status": {k: v.to_dict() for k, v in s.status.items()}, "notes": s.notes,
            } for lab, s in exp.structures.items()},
            "taxonomy_trends": {t.coordinate: t.slope.to_dict() for t in exp.trends},
            "lr_sweeps": exp.lr_sweeps.to_dict(orient="records"),
            "lr_drift": exp.lr_drift.to_dict(orient="records"),
            "lr_transfer": exp.transfer.to_dict(orient="records"),
            "pooled": fit(exp.pooled), "notes": exp.notes, "protocol": exp.protocol,
        })
    excluded = sum(len(t.excluded) for t in report.tables.values())
    return {"source": report.source, "sweeps": list(report.tables), "runs_used": report.runs_used,
            "runs_excluded": excluded, "replicates": report.replicates, "seed": report.seed,
            "level": report.level, "metric": report.metric, "experiments": exps}
