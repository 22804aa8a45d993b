"""Load run directories (or any source of run records) into tidy tables of runs and evaluation curves.

Only completed runs with a finite final loss and a FLOP count enter the tables; every other run is listed
in `excluded` with its reason, so nothing is dropped silently. A run directory whose files cannot be used
(scaling.store.results.read_summary: unreadable, a summary field unusable or missing, another run's summary,
edited, config or metrics missing) or that has no summary.json yet is named in one warning line and left out of
every sweep that does not list it; a completed run's evaluations without a usable val_loss are named in one line
and left out, its other evaluations kept. Each run gets

    n_eff = train_flops_per_token / 6      (effective parameters: what a dense model of equal cost would have)

next to its raw `params`, an `experiment` (family/data) within which labels are compared, and a `label`: the
run's sweep variant (`btt_r4`), taken from the sweep manifest when one is given, else summary.json's `label`,
else `scaling.config.labels.default_label` of config.yaml (structure + distinguishing settings). Einsum runs carry
their taxonomy coordinates omega, psi, nu. `schedule` says whether a curve may be read at intermediate budgets.
`final_train_loss` is the mean training loss over the last 5% of the run (`final_train_loss`), for `--metric
train_loss` (analysis.io.metric).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from analysis.errors import AnalysisError
from analysis.fit.taxonomy import coordinates
from scaling.config.labels import default_label
from scaling.store.results import DirectoryError, checked_root, iter_run_dirs, read_jsonl, read_summary
from scaling.store.files import RunFileError, read_config_file
from scaling.store.manifest import Manifest, ManifestError
from scaling.store.paths import RunPaths
from scaling.store.states import RunState
from scaling.store.summary import TOTALS_KEYS

EVAL_COLUMNS = ("run_id", "step", "tokens", "flops", "val_loss", "wall_s")
EXCLUDED_COLUMNS = ("run_id", "status", "reason", "source")
EXTRA_COLUMNS = ("experiment", "data", "theta", "omega", "psi", "nu", "n_eff", "schedule", "batch_size",
                 "eval_flops", "final_train_loss", "precision")
TRAIN_LOSS_WINDOW = 0.05  # final_train_loss: the mean training loss over this last fraction of a run's units
RUN_COLUMNS = TOTALS_KEYS + EXTRA_COLUMNS
TRUNK_REASON = "cooldown trunk (its branches are the reads)"
logger = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """One run as any source delivers it: its summary, resolved config and metric rows."""

    run_id: str
    summary: dict[str, Any] | None
    config: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    source: str
    label: str | None = None  # the sweep manifest's label, which takes precedence over the summary's
    problem: str | None = None  # the run file that cannot be used (scaling.store.files.RunFileError names it)


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


def _exclusion_reason(rec: RunRecord) -> str | None:
    summary = rec.summary
    if rec.problem is not None:
        return f"unusable {rec.problem}"
    if summary is None:
        return "not started (no run directory)" if rec.source.startswith("sweep manifest") else \
            "no summary.json"
    if summary.get("status") != RunState.COMPLETED:
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
    row = {k: s.get(k) for k in TOTALS_KEYS}
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
    train = cfg.get("train") or {}
    row["schedule"] = s.get("schedule") or train.get("schedule") or "cosine"  # the trainer's default
    row["batch_size"] = s.get("batch_size") or train.get("batch_size")
    row["precision"] = train.get("precision")  # as the run resolved it (fp32 / bf16)
    row["eval_flops"] = ",".join(repr(float(c)) for c in train.get("eval_flops") or []) or None  # sweep budgets
    row["label"] = rec.label or s.get("label") or cfg.get("label") or (
        default_label(cfg) if structure.get("name") else row.get("structure") or "unknown")
    theta = s.get("theta") or structure.get("theta")
    row["theta"], row["omega"], row["psi"], row["nu"] = None, None, None, None
    if theta is not None and row.get("structure") == "einsum":
        row["theta"] = ",".join(f"{float(t):g}" for t in theta)
        coords = coordinates(theta)
        row["omega"], row["psi"], row["nu"] = coords.omega, coords.psi, coords.nu
    for key in ("omega", "psi", "nu"):  # values the trainer recorded take precedence
        if s.get(key) is not None:
            row[key] = float(s[key])
    return row


def final_train_loss(metrics: list[dict[str, Any]]) -> float | None:
    """The mean of the train rows' losses over the last TRAIN_LOSS_WINDOW of the run's training units (the last
    epoch of a 20-epoch run), None without train rows. A mean over many batches, not one batch's loss: with the
    LR decayed to (nearly) 0 there the model barely moves, and the batches' spread averages out."""
    rows = [(float(m["tokens"]), float(m["loss"])) for m in metrics if m.get("kind") == "train"
            and _finite_positive(m.get("loss")) is not None and _finite_positive(m.get("tokens")) is not None]
    if not rows:
        return None
    end = max(t for t, _ in rows)
    window = [loss for t, loss in rows if t > (1 - TRAIN_LOSS_WINDOW) * end]
    return float(sum(window) / len(window))


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
                     "flops": flops, "val_loss": loss, "wall_s": m.get("wall_s")})
    return rows


def _fork_of(rec: RunRecord) -> str | None:
    train = (rec.config or {}).get("train")
    return train.get("fork_from") if isinstance(train, dict) else None


def table_from_records(records: Iterable[RunRecord]) -> RunTable:
    """Build the run, evaluation and exclusion tables from run records of any source. A cooldown trunk (a run some
    other run forks from) is excluded: its branches are the annealed reads at each budget, its curve is not."""
    records = list(records)
    trunks = {_fork_of(rec) for rec in records} - {None}
    runs, evals, excluded = [], [], []
    for rec in records:
        reason = _exclusion_reason(rec) or (TRUNK_REASON if rec.run_id in trunks else None)
        if reason is not None:
            status = (rec.summary or {}).get("status", "unknown")
            excluded.append({"run_id": rec.run_id, "status": status, "reason": reason, "source": rec.source})
            continue
        try:
            row = _run_row(rec)
        except AnalysisError as err:  # e.g. a malformed einsum theta: this run only
            excluded.append({"run_id": rec.run_id, "status": RunState.COMPLETED, "reason": str(err),
                             "source": rec.source})
            continue
        row["final_train_loss"] = final_train_loss(rec.metrics)
        runs.append(row)
        curve = _eval_rows(row["run_id"], float(row["train_flops_per_token"]), rec.metrics)
        if not curve:  # no evaluation rows: the final point still belongs on the curve
            curve = [{"run_id": row["run_id"], "step": row.get("steps"), "tokens": float(row["tokens"]),
                      "flops": float(row["flops"]), "val_loss": float(row["final_val_loss"]),
                      "wall_s": row.get("wall_time_s")}]
        evals.extend(curve)
    return RunTable(
        runs=pd.DataFrame(runs, columns=list(RUN_COLUMNS)),
        evals=pd.DataFrame(evals, columns=list(EVAL_COLUMNS)),
        excluded=pd.DataFrame(excluded, columns=list(EXCLUDED_COLUMNS)),
    )


def iter_directory_records(results_root: str | Path) -> Iterable[RunRecord]:
    """Run records from `<results_root>/runs/<run_id>/` (summary.json, config.yaml, metrics.jsonl). A run whose
    files cannot be used, or that has no summary.json, is named in one warning line (its record says why)."""
    for rdir in iter_run_dirs(results_root):
        paths = RunPaths(rdir)
        try:
            summary = read_summary(rdir)  # checks config.yaml against the run id, and a finished run's metrics
            rec = RunRecord(rdir.name, summary, read_config_file(paths.config), read_jsonl(paths.metrics), str(rdir))
        except RunFileError as err:  # that run's problem: one line with the file and the fix, the rest loads
            logger.warning(f"warning: run {rdir.name} left out: {err}")
            yield RunRecord(rdir.name, None, None, [], str(rdir), problem=err.path.name)
            continue
        if summary is None:
            logger.warning(f"warning: run {rdir.name} left out: {paths.summary} does not exist (the run has not "
                           "written it yet, was killed as it started, or it was deleted to resume the run); "
                           "launch its sweep again to finish it")
        elif summary["status"] == RunState.COMPLETED:
            rec.metrics = _usable_evals(rec, paths.metrics)
        yield rec


def _usable_evals(rec: RunRecord, path: Path) -> list[dict[str, Any]]:
    """The run's metric rows less its evaluations without a usable val_loss (NaN, a string), named in one warning
    line: the run's other evaluations and its final loss still enter the fits."""
    def bad(m: dict[str, Any]) -> bool:
        loss = m.get("val_loss")
        return m.get("kind") == "eval" and (isinstance(loss, (str, bool)) or _finite_positive(loss) is None)

    dropped = [m for m in rec.metrics if bad(m)]
    if dropped:
        evals = sum(m.get("kind") == "eval" for m in rec.metrics)
        shown = ", ".join(f"step {m['step']}: {json.dumps(m.get('val_loss'))[:20]}" for m in dropped[:3])
        logger.warning(f"warning: run {rec.run_id}: {path}: {len(dropped)} of {evals} eval rows have no usable "
                       f"val_loss ({shown}{', ...' if len(dropped) > 3 else ''}); those rows are left out and the "
                       f"run's other {evals - len(dropped)} evaluations are used; delete the run directory "
                       f"{path.parent} to retrain the run for a whole curve")
    return [m for m in rec.metrics if not bad(m)]


def _checked_root(results_root: str | Path) -> Path:
    try:
        root = checked_root(results_root, write=False)
    except DirectoryError as err:
        raise AnalysisError(str(err), "results_root") from None
    if not (root / "runs").is_dir():
        raise AnalysisError(f"results_root={root}: no runs/ directory there; point it at the results root "
                            "that holds runs/<run_id>/summary.json", "results_root")
    return root


def _usable(table: RunTable, where: str, argument: str) -> RunTable:
    """`table` if it has a usable run; else an error about `where`, the part of `argument` the table came from."""
    if table.runs.empty:
        if table.excluded.empty:
            raise AnalysisError(f"{where}: holds no run directories", argument)
        raise AnalysisError(f"{where}: no usable runs; {table.exclusion_note()}. "
                            "Wait for runs to finish or rerun the diverged ones with a lower lr", argument)
    return table


def load_results(results_root: str | Path) -> RunTable:
    """Tidy tables of every run under results_root; raises AnalysisError when there is nothing to analyse."""
    root = _checked_root(results_root)
    return _usable(table_from_records(iter_directory_records(root)), f"results_root={root}: runs/", "results_root")


def sweep_manifests(results_root: str | Path) -> dict[str, dict[str, str | None]]:
    """{sweep: {run_id: label}} from the launcher's manifests `<results_root>/sweeps/<name>.json`.

    An entry's label is its variant (scaling.store.manifest.ManifestRun.variant_name); an unreadable manifest is
    reported in one line and left out.
    """
    out: dict[str, dict[str, str | None]] = {}
    for path in Manifest.paths(results_root):
        try:
            manifest = Manifest.read(path)
        except ManifestError as err:
            logger.warning(f"warning: {err}")
            continue
        if manifest is not None:  # None: removed since it was listed
            out[manifest.name] = {r.run_id: r.variant_name for r in manifest.runs}
    return out


NO_SWEEP = "(no sweep)"


def load_sweeps(results_root: str | Path, names: Iterable[str] | None = None,
                rounds: bool = False) -> dict[str, RunTable]:
    """One run table per sweep, each labelled from its own manifest (a run two sweeps share is in both).

    Sweeps are the launcher's manifests plus the `sweep` recorded in summary.json (or config.yaml, before the run
    wrote a summary); runs of no sweep form NO_SWEEP. A run whose files cannot be used is in no sweep but one whose
    manifest lists it (iter_directory_records names it). `names` None: every sweep (NO_SWEEP too, when such runs
    exist), leaving out with a warning line those without a usable run unless none has one; a name with no runs
    is an error. `rounds`: the named sweeps are rounds of one experiment (a sweep and its plan-next successors),
    read as one table named "A+B".
    """
    root = _checked_root(results_root)
    records = {rec.run_id: rec for rec in iter_directory_records(root)}
    members = sweep_manifests(root)
    for rid, rec in records.items():
        sweep = (rec.summary or {}).get("sweep") or (rec.config or {}).get("sweep")
        if sweep or rec.summary is not None:  # a run with no usable summary is no sweep's of its own
            members.setdefault(str(sweep or NO_SWEEP), {}).setdefault(rid, None)
    every = names is None and not rounds
    if every:
        names = sorted(members, key=lambda n: (n == NO_SWEEP, n))
        if not names:
            raise AnalysisError(f"results_root={root}: runs/ holds no run with a usable summary.json (see the "
                                "warnings above)", "results_root")
    names = list(names or [])
    for name in names:
        if name not in members:
            known = sorted(n for n in members if n != NO_SWEEP)
            raise AnalysisError(f"names={name}: no such sweep under {root}; sweeps there: {known}", "names")
    if rounds:
        members = {"+".join(names): _merged_rounds(members, names)}
        names = list(members)
    tables, unusable = {}, {}
    for name in names:
        mine = [RunRecord(rid, None, None, [], f"sweep manifest {name}") if rid not in records else
                replace(records[rid], label=label) for rid, label in members[name].items()]
        table = table_from_records(mine)
        if every and table.runs.empty:
            unusable[name] = table
        else:
            tables[name] = _usable(table, f"names={name}", "names")
    for name, table in unusable.items():
        if not tables:  # no sweep has a usable run: the first one's error
            _usable(table, f"names={name}", "names")
        logger.warning(f"warning: sweep {name} left out: no usable runs; {table.exclusion_note()}")
    return tables


def _merged_rounds(members: dict[str, dict[str, str | None]], names: list[str]) -> dict[str, str | None]:
    """{run_id: label} of every named sweep; a run two rounds give different labels is an error."""
    if len(names) < 2:
        raise AnalysisError(f"rounds=True: name two or more sweeps with `names` (got {names or 'none'})", "rounds",
                            "names")
    merged: dict[str, str | None] = {}
    for name in names:
        for rid, label in members[name].items():
            earlier = merged.get(rid)
            if earlier is not None and label is not None and earlier != label:
                raise AnalysisError(f"rounds=True: run {rid} is '{earlier}' in one round and '{label}' in {name}; "
                                    "rounds must label a shared run alike (rename the variant in one sweep file)",
                                    "rounds")
            merged[rid] = label or earlier
    return merged


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
            raise AnalysisError(f"paths={path}: no coord.csv there; pass the coordcheck.out folder of "
                                "`python -m scaling.coordcheck`", "paths")
        df = pd.read_csv(csv)
        missing = set(COORD_COLUMNS) - set(df.columns)
        if missing:
            raise AnalysisError(f"paths={csv}: missing columns {sorted(missing)}; expected the coord.csv "
                                "of `python -m scaling.coordcheck`", "paths")
        checks[csv.parent.name] = df
    return checks
