"""Run a structure search: each round is a sweep launched through the project's launcher, then pooled-fitted.

Rounds are sweeps named NAME_lr (the LR check) and NAME_r1, NAME_r2, ...: variants are the candidates alive and
dense, each with `sizes` widths around its predicted compute-optimal size at the round's budget C_r, trained
at constant LR to C_r and read at C_r/4, C_r/2 and C_r. Run identity is the config hash, so rerunning the
command replays every decision from the runs on disk (the fits are seeded), skips finished runs and resumes
interrupted ones: nothing trains twice. After each round the pooled fit (analysis.fit.pooled, through
analysis.report.analyse) of every round so far scores each candidate by its loss advantage over dense at C_r:
log L*_dense(C_r) - log L*_candidate(C_r), with its bootstrap interval. Ranking by it is ranking by the compute
multiplier at C_r (the same fitted frontiers), but its interval stays as tight as the losses are: a multiplier
extrapolates along a frontier that early rounds (a factor 4 of compute) barely pin: in the shipped search's first
round intervals reached 1e37, and the worst candidate by loss (low-rank 1/4, -10.6%) had multiplier 4.55 (interval
0.18 to 5.9e24). The report gives both.

Sizes: before a candidate has runs, N* = sqrt(C / (6 r)) in effective parameters (C = 6 N D, D = r N), mapped
to widths by its own FLOP formulas (analysis.plan_next.WidthPlanner); afterwards its isoFLOP size law from the
rounds so far (plan_next.size_laws, weak fits allowed), as `python -m analysis plan-next` plans.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from analysis.errors import AnalysisError
from analysis.fit.bootstrap import Interval
from analysis.fit.pooled import PooledFit
from analysis.io.load import RunTable, load_sweeps
from analysis.plan_next import WIDTH, WIDTH_STEP, WidthPlanner, size_laws, targets
from analysis.report.build import Report, analyse
from analysis.search.decide import Stage, Trace, best_lr, nearest, planned_cost, search
from analysis.search.spec import DENSE, READS, SearchError, SearchSpec
from scaling.launch.submit import launch_sweep
from scaling.launch.sweeps import SweepError
from scaling.store.states import FINISHED_STATES

logger = logging.getLogger(__name__)


class RoundPending(Exception):
    """A round's runs are not all finished (Slurm jobs still queued, or failed runs): rerun the command later."""


@dataclass
class LRChoice:
    lr: float | None  # None: the candidate's own configured LR
    source: str  # "checked", "from <label>", "own"
    losses: dict[float, float] = field(default_factory=dict)


@dataclass
class SearchRun:
    """Everything a finished (or stopped) search knows, for its report."""

    spec: SearchSpec
    results_root: str
    trace: Trace
    lrs: dict[str, LRChoice]
    widths: dict[tuple[str, int], list[int]]  # (label, round) -> widths
    sizing: dict[tuple[str, int], str]  # (label, round) -> "FLOP formula" or the fit the size law came from
    spent: float  # training FLOPs of every run of the search's sweeps (dense and the LR check included)
    sweeps: list[str]
    report: Report | None


def advantage(pooled: PooledFit, label: str) -> Interval:
    """log L*_dense(C) - log L*_label(C) at the fit's reference budget (positive: below dense's loss), its interval
    the loss gap's turned around."""
    gap = pooled.loss_gap(label)
    return replace(gap, value=-gap.value, lo=-gap.hi, hi=-gap.lo)


def round_name(spec: SearchSpec, i: int) -> str:
    return f"{spec.name}_r{i + 1}"


class Driver:
    """Plans, launches and measures the rounds of one search under `results_root`."""

    def __init__(self, spec: SearchSpec, results_root: str, launch_args: Sequence[str] = (),
                 workers: int | None = None):
        self.spec, self.root, self.launch_args, self.workers = spec, str(results_root), list(launch_args), workers
        self.planners: dict[str, WidthPlanner] = {}
        self.lrs: dict[str, LRChoice] = {}
        self.widths: dict[tuple[str, int], list[int]] = {}
        self.sizing: dict[tuple[str, int], str] = {}
        self.flops: dict[str, float] = {}  # sweep -> training FLOPs of its runs
        self.run_ids: dict[str, set[str]] = {}  # sweep -> the runs of its manifest as launched now
        self.report: Report | None = None

    def overrides(self, label: str) -> list[str]:
        own = self.spec.reference if label == DENSE else self.spec.candidate(label).overrides
        lr = self.lrs.get(label)
        return [*own, *([f"train.lr={lr.lr:g}"] if lr and lr.lr is not None else [])]

    def planner(self, label: str) -> WidthPlanner:
        if label not in self.planners:
            self.planners[label] = WidthPlanner(label, [*self.spec.base, *self.overrides(label)], WIDTH_STEP, {})
        return self.planners[label]

    def sizes(self, label: str, i: int, flops: float) -> list[int]:
        """Widths of `label` in round i around its predicted N*(flops)."""
        n_star, how = None, "FLOP formula"
        if self.report is not None:
            try:
                law = size_laws(self.report, [label], allow_weak=True)[label]
                n_star, how = law.predict(flops), f"{law.fit} fit"
            except AnalysisError:
                pass
        if n_star is None or not (math.isfinite(n_star.value) and n_star.value > 0):
            guess = math.sqrt(flops / (6 * self.spec.tokens_per_param))
            n_star, how = Interval(guess, guess, guess), "FLOP formula"
        widths, _ = self.planner(label).choose(targets(n_star, self.spec.sizes)[0], flops)
        if len(widths) < 3:
            raise SearchError(f"label {label} in round {i + 1}: only {len(widths)} valid widths around N* = "
                              f"{n_star.value:.3g}; an isoFLOP minimum needs 3 (choose another budget)")
        self.widths[(label, i)], self.sizing[(label, i)] = widths, how
        return widths

    def launch(self, sweep: dict[str, Any], dry_run: bool = False) -> None:
        """Launch `sweep` (finished runs are skipped); RoundPending when some of its runs are not finished."""
        args = [f"results_root={self.root}", *self.launch_args, *(["dry_run=true"] if dry_run else [])]
        try:
            manifest = launch_sweep(sweep, args)
        except SweepError as err:
            raise SearchError(f"sweep {sweep['name']}: {err}") from None
        self.flops[sweep["name"]] = sum(float(r["flops"]) for r in manifest["runs"])
        self.run_ids[sweep["name"]] = {r["run_id"] for r in manifest["runs"]}
        pending = [r["run_id"] for r in manifest["runs"] if r["state"] not in FINISHED_STATES]
        if pending and not dry_run:
            raise RoundPending(f"sweep {sweep['name']}: {len(pending)} of {len(manifest['runs'])} runs are not "
                               f"finished (e.g. {pending[0]}); rerun the same command once they are (failed runs: "
                               "add retry_failed=true); finished runs are kept")

    def load(self, names: list[str]) -> dict[str, RunTable]:
        """The runs of the named sweeps as launched by this search, as one table (later rounds read as rounds of
        one experiment, named "A+B"): runs an earlier version of the search file recorded under the same sweep
        names are left out."""
        ids = set().union(*(self.run_ids[name] for name in names))
        return {name: RunTable(*(frame[frame["run_id"].isin(ids)].reset_index(drop=True)
                                 for frame in (table.runs, table.evals, table.excluded)))
                for name, table in load_sweeps(self.root, names, rounds=len(names) > 1).items()}

    def lr_sweep(self) -> dict[str, Any]:
        first = self.spec.stages[0].flops
        variants = {}
        for label in self.spec.lr_labels:
            widths = self.sizes(label, 0, first)
            own = [o for o in self.overrides(label) if not o.startswith("train.lr=")]  # the axis sweeps it
            variants[label] = {"overrides": own,
                               "axes": {WIDTH: [widths[len(widths) // 2]], "train.lr": self.spec.lr_values}}
        return {"name": f"{self.spec.name}_lr", "description": f"LR check of search {self.spec.name}",
                "base": self.spec.base, "variants": variants, "budgets": {"flops": [first]}}

    def check_lrs(self) -> None:
        """The LR check: each listed candidate's best LR; other theta points inherit their nearest neighbour's."""
        if not self.spec.lr_labels:
            return
        sweep = self.lr_sweep()
        self.launch(sweep)
        runs = self.load([sweep["name"]])[sweep["name"]].runs
        for label in self.spec.lr_labels:
            mine = runs[runs["label"] == label]
            losses = {float(lr): float(loss) for lr, loss in zip(mine["lr"], mine["final_val_loss"])}
            lr = best_lr(losses)
            self.lrs[label] = LRChoice(lr, "checked" if lr is not None else "own (every LR diverged)", losses)
        coords = {c.label: c.coords for c in self.spec.candidates}
        measured = [lab for lab in self.spec.lr_labels if self.lrs[lab].lr is not None]
        for c in self.spec.candidates:
            if c.label not in self.lrs:
                near = nearest(coords, measured, c.label)
                self.lrs[c.label] = LRChoice(self.lrs[near].lr, f"from {near}") if near else LRChoice(None, "own")
        self.planners.clear()  # an LR does not change sizes, but the planners composed the old overrides

    def round_sweep(self, i: int, stage: Stage, labels: Sequence[str]) -> dict[str, Any]:
        seeds = list(range(stage.seeds))
        variants = {lab: {"overrides": self.overrides(lab),
                          "axes": {WIDTH: self.sizes(lab, i, stage.flops), "train.seed": seeds}}
                    for lab in [DENSE, *labels]}
        return {"name": round_name(self.spec, i), "base": self.spec.base, "variants": variants,
                "description": f"Round {i + 1} of search {self.spec.name}: {len(labels)} candidates and dense at "
                               f"C = {stage.flops:.3g}",
                "budgets": {"flops": [f * stage.flops for f in READS], "from_curves": True}}

    def measure(self, i: int, stage: Stage, labels: list[str]) -> dict[str, Interval]:
        """Launch round i for `labels` and return their loss advantages over dense at C_i (module docstring), from
        the pooled fit of every round so far."""
        self.launch(self.round_sweep(i, stage, labels))
        names = [round_name(self.spec, j) for j in range(i + 1)]
        self.report = analyse(self.load(names), self.root, replicates=self.spec.replicates, workers=self.workers)
        pooled = self.report.experiments[0].pooled
        if pooled is None:
            raise SearchError(f"round {i + 1}: no pooled fit of {'+'.join(names)} "
                              f"({'; '.join(self.report.experiments[0].notes)}); give the rounds more sizes or budget")
        found = {lab: advantage(pooled, lab) for lab in labels if lab in pooled.labels}
        logger.info(f"round {i + 1} at C = {stage.flops:.3g}, loss advantage over dense: " + ", ".join(
            f"{lab} {iv.fmt()}" for lab, iv in sorted(found.items(), key=lambda kv: -kv[1].value)))
        return found

    def run(self) -> SearchRun:
        self.check_lrs()
        labels = [c.label for c in self.spec.candidates]
        trace = search(labels, self.spec.stages, self.measure, self.spec.cost, self.spec.allowance,
                       spent=self.spec.lr_cost)
        return SearchRun(self.spec, self.root, trace, self.lrs, self.widths, self.sizing, sum(self.flops.values()),
                         list(self.flops), self.report)

    def dry_run(self) -> list[str]:
        """The launcher's dry run of the LR check and the first round (tables, time estimate), and the plan's
        compute at the keep fractions against the allowance and the full grid, as lines."""
        labels = [c.label for c in self.spec.candidates]
        if self.spec.lr_labels:
            self.launch(self.lr_sweep(), dry_run=True)
        self.launch(self.round_sweep(0, self.spec.stages[0], labels), dry_run=True)
        rounds = planned_cost(len(labels), self.spec.stages, self.spec.cost)
        total = self.spec.lr_cost + sum(rounds)
        return [f"search {self.spec.name}: {len(labels)} candidates and dense, budget C = {self.spec.budget:.3g}",
                f"LR check: {self.spec.lr_cost:.3g} training FLOPs ({len(self.spec.lr_labels)} candidates x "
                f"{len(self.spec.lr_values)} LRs)",
                *(f"round {i + 1} at C = {s.flops:.3g}: {c:.3g} training FLOPs when the keep fraction advances"
                  for i, (s, c) in enumerate(zip(self.spec.stages, rounds))),
                f"planned total {total:.3g} of the allowance {self.spec.allowance:.3g} (ties with the best advance "
                "too, up to the allowance); the full grid would take "
                f"{self.spec.full_grid():.3g} ({total / self.spec.full_grid():.0%})",
                f"first round exactly: {self.flops[round_name(self.spec, 0)]:.3g} training FLOPs"]


def default_out(results_root: str | Path, name: str) -> Path:
    return Path(results_root) / "searches" / name
