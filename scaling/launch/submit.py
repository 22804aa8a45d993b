"""Launch a sweep: expand, validate, dedupe, cost, submit.

    python -m scaling.launch +sweep=btt_gpt2                    # run locally, wait for the results
    python -m scaling.launch +sweep=btt_gpt2 dry_run=true       # table of runs, estimated time; submit nothing
    python -m scaling.launch +sweep=btt_gpt2 cluster=slurm cluster.partition=gpu cluster.gpus_per_node=1

Every run is composed and validated before anything is submitted. Finished runs (completed/diverged) are skipped,
interrupted ones resume, failed ones are retried only with retry_failed=true, runs alive elsewhere are left alone.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import submitit
from omegaconf import DictConfig, OmegaConf

from scaling.config.compose import register_sweep
from scaling.launch.jobs import RunBatch
from scaling.config.labels import run_label
from scaling.train.progress import format_duration
from scaling.store.manifest import Manifest, ManifestError, ManifestRun
from scaling.store.results import checked_root
from scaling.store.states import FINISHED_STATES, SUBMIT_STATES, RunState
from scaling.launch.cancel import (LaunchInterrupted, interruption_note, launched_jobs, record_jobs,
                                   terminate_as_interrupt, wait_for_local_jobs)
from scaling.launch.status import corrupt_note, run_state, wait_for_jobs
from scaling.launch.sweeps import (
    Expansion, PlannedRun, SweepError, compose_launch_config, expand, register_sweeps, runs_on_cuda,
    split_run_overrides,
)
from scaling.launch.throughput import estimate_seconds
from scaling.train.tracking import name_sweep_run

logger = logging.getLogger(__name__)


@dataclass
class Decision:
    run: PlannedRun
    state: RunState
    submit: bool


@dataclass
class LaunchResult:
    """What one launch decided and submitted (the manifest is its record on disk)."""

    name: str
    results_root: str
    decisions: list[Decision]
    jobs: list[submitit.Job]


def decide(expansion: Expansion, results_root: str, retry_failed: bool) -> list[Decision]:
    decisions = []
    for run in expansion.runs:
        state = run_state(results_root, run.plan.run_id)
        submit = state in SUBMIT_STATES or (retry_failed and state == RunState.FAILED)
        decisions.append(Decision(run, state, submit))
    return decisions


def log_table(decisions: list[Decision], seconds: dict[str, float] | None) -> None:
    """One row per run: its label (the sweep variant), shape, budget and estimated time; then its swept settings."""
    labels = [run_label(d.run.cfg) for d in decisions]
    width = max([5, *map(len, labels)])
    header = f"{'run_id':16}  {'state':11}  {'label':{width}}  {'family':6}  {'structure':9}  {'width':>5}  " \
             f"{'params':>9}  {'tokens':>9}  {'FLOPs':>9}  {'est':>9}  swept"
    logger.info(header)
    logger.info("-" * len(header))
    for d, label in zip(decisions, labels):
        p = d.run.plan
        est = format_duration(seconds[p.run_id]) if seconds and p.run_id in seconds else "-"
        logger.info(f"{p.run_id:16}  {d.state:11}  {label:{width}}  {p.family:6}  {p.structure:9}  {p.width:>5}  "
                    f"{p.params:>9,}  {p.units:>9.3g}  {p.train_flops:>9.3g}  {est:>9}  {' '.join(d.run.axes)}")


def make_executor(cluster: DictConfig, folder: Path) -> submitit.Executor:
    kind = cluster.kind
    if kind not in ("local", "debug", "slurm"):
        raise SweepError(f"cluster.kind={kind!r} is not known; choose local, debug or slurm")
    if cluster.nodes < 1 or (cluster.nodes > 1 and kind != "slurm"):
        raise SweepError(f"cluster.nodes={cluster.nodes} is not possible with cluster={kind}: use cluster.nodes=1, "
                         "or cluster=slurm for more nodes")
    executor = submitit.AutoExecutor(folder=folder, cluster=kind, slurm_max_num_timeout=cluster.max_num_timeout)
    params = dict(timeout_min=cluster.timeout_min, cpus_per_task=cluster.cpus_per_task,
                  tasks_per_node=cluster.tasks_per_node, nodes=cluster.nodes)
    if cluster.gpus_per_node:
        params["gpus_per_node"] = cluster.gpus_per_node
    if cluster.mem_gb:
        params["mem_gb"] = cluster.mem_gb
    if kind == "slurm":
        extra = dict(cluster.additional_parameters)
        for key in ("account", "qos"):
            if cluster[key]:
                extra[key] = cluster[key]
        params.update(
            slurm_partition=cluster.partition, slurm_array_parallelism=cluster.parallel_jobs or 256,
            slurm_signal_delay_s=cluster.signal_delay_s, slurm_additional_parameters=extra,
            slurm_setup=list(cluster.setup),
        )
        params = {k: v for k, v in params.items() if v is not None}
    executor.update_parameters(**params)
    return executor


def pack(runs: list[PlannedRun], cluster: DictConfig) -> list[list[PlannedRun]]:
    """Group runs into jobs: `runs_per_job` each (one per Slurm task by default), or locally one job per parallel
    CPU slot, each given the whole list: a shared queue, where a job skips what another has finished or holds the
    lease of, so no slot idles while another works through a slice of expensive runs."""
    if cluster.runs_per_job or cluster.kind == "slurm":
        per_job = max(1, cluster.runs_per_job or 1)
        units = _fork_units(runs)  # a cooldown trunk and its branches stay in one job, trunk first
        return [[run for unit in units[i:i + per_job] for run in unit] for i in range(0, len(units), per_job)]
    if cluster.kind == "debug":  # in this process: one after another
        return [list(runs)]
    slots = cluster.parallel_jobs or max(1, len(os.sched_getaffinity(0)) // max(1, cluster.cpus_per_task))
    return [list(runs) for _ in range(min(slots, len(runs)))]


def _fork_units(runs: list[PlannedRun]) -> list[list[PlannedRun]]:
    """Runs grouped so each cooldown branch (train.fork_from) is with its trunk; other runs alone."""
    units: dict[str, list[PlannedRun]] = {}
    for run in runs:
        units.setdefault(run.cfg.train.get("fork_from") or run.plan.run_id, []).append(run)
    return list(units.values())


def check_threads(expansion: Expansion, cluster: DictConfig) -> None:
    """Every run computes with train.threads threads (part of its identity): its job must have that many CPUs."""
    most = max((r.cfg.train.threads for r in expansion.runs), default=1)
    if cluster.kind != "debug" and most > cluster.cpus_per_task:
        raise SweepError(f"train.threads={most} is more than cluster.cpus_per_task={cluster.cpus_per_task}: a run "
                         f"would share its CPUs; set cluster.cpus_per_task={most} (or lower train.threads)")


def submit(runs: list[PlannedRun], cluster: DictConfig, folder: Path) -> list[submitit.Job]:
    executor = make_executor(cluster, folder)
    batches = [RunBatch([name_sweep_run(OmegaConf.to_container(r.cfg, resolve=True), r.axes) for r in group])
               for group in pack(runs, cluster)]
    with executor.batch():
        jobs = [executor.submit(batch) for batch in batches]
    return jobs


def manifest_record(results_root: str, name: str, decisions: list[Decision], jobs: list[submitit.Job],
                    overrides: Sequence[str], seconds: Mapping[str, float] | None = None) -> Manifest:
    """The manifest of a sweep after this launch: its runs (with training FLOPs and, where known, estimated
    seconds, which weight progress bars) and every job submitted for it so far (an unreadable earlier manifest is
    replaced whole)."""
    try:
        previous = Manifest.read(Manifest.path(results_root, name))
    except ManifestError:
        previous = None
    runs = tuple(ManifestRun(d.run.plan.run_id, d.run.label, d.run.plan.train_flops,
                             seconds=(seconds or {}).get(d.run.plan.run_id)) for d in decisions)
    jobs_so_far = (previous.jobs if previous else ()) + tuple(str(j.job_id) for j in jobs)
    return Manifest(name, runs, tuple(overrides), jobs_so_far, time.time())


def launch(cfg: DictConfig) -> list[submitit.Job]:
    """Launch the sweep of a composed launch config; return the submitted jobs."""
    return launch_result(cfg).jobs


def launch_result(cfg: DictConfig) -> LaunchResult:
    """Launch (or dry-run) the sweep; a results root that cannot take its files is refused before anything runs (a
    dry run too: it caches throughputs there, and it previews a launch that would write there)."""
    results_root = str(checked_root(cfg.results_root, write=True))
    extra = [*cfg.overrides, f"results_root={results_root}"]
    expansion = expand(cfg.sweep, extra, runs_on_cuda(cfg.cluster))
    check_threads(expansion, cfg.cluster)
    decisions = decide(expansion, results_root, cfg.retry_failed)
    todo = [d.run for d in decisions if d.submit]
    counts = {s.value: sum(d.state == s for d in decisions) for s in sorted({d.state for d in decisions})}
    logger.info(f"sweep {expansion.name!r}: {len(decisions)} runs {counts}; {len(todo)} to run")
    for d in decisions:
        if d.state == RunState.CORRUPT:  # that run's problem: reported, left alone, the rest goes ahead
            logger.warning(f"  skipped {d.run.plan.run_id}: {corrupt_note(results_root, d.run.plan.run_id)}")
    if cfg.dry_run:
        seconds = estimate_seconds([d.run for d in decisions], results_root, measure=cfg.estimate_time)
        log_table(decisions, seconds)
        flops = sum(d.run.plan.train_flops for d in decisions if d.submit)
        est = sum(seconds.get(r.plan.run_id, 0.0) for r in todo)
        time_note = f"~{format_duration(est)} of compute" if seconds else "no time estimate (estimate_time=false)"
        logger.info(f"total to run: {len(todo)} runs, {flops:.3g} training FLOPs, {time_note} (dry run: nothing "
                    "submitted)")
        return LaunchResult(expansion.name, results_root, decisions, [])
    if not todo:
        logger.info("nothing to submit: every run is finished, running elsewhere, or failed (retry_failed=true)")
        return LaunchResult(expansion.name, results_root, decisions, [])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = Path(results_root) / "submitit" / expansion.name / f"{stamp}-{os.getpid()}" / "%j"
    # the progress bars' weights: known throughputs only (a dry run measured and cached them), nothing measured here
    seconds = estimate_seconds([d.run for d in decisions], results_root, measure=False)
    jobs = submit(todo, cfg.cluster, folder)
    if cfg.cluster.kind != "debug":  # debug jobs run in this process: nothing outlives it
        record_jobs(folder.parent, cfg.cluster.kind, [str(j.job_id) for j in jobs])
    manifest = manifest_record(results_root, expansion.name, decisions, jobs, cfg.overrides, seconds
                               ).write(results_root)
    logger.info(f"submitted {len(todo)} runs in {len(jobs)} {cfg.cluster.kind} job(s): "
                f"{', '.join(str(j.job_id) for j in jobs)}; manifest {manifest}; job logs in {folder.parent}")
    if cfg.cluster.wait:
        run_ids = [d.run.plan.run_id for d in decisions]
        try:
            with terminate_as_interrupt():
                wait_for_jobs(jobs, results_root, run_ids, desc=expansion.name,
                              flops={d.run.plan.run_id: d.run.plan.train_flops for d in decisions}, seconds=seconds)
        except KeyboardInterrupt as err:
            raise LaunchInterrupted(interrupted_launch(expansion.name, results_root, folder.parent, run_ids,
                                                       by_ctrl_c=not err.args), by_ctrl_c=not err.args) from None
    return LaunchResult(expansion.name, results_root, decisions, jobs)


def interrupted_launch(name: str, results_root: str, folder: Path, run_ids: Sequence[str], by_ctrl_c: bool) -> str:
    """The note of a launcher stopped while waiting. A terminal's Ctrl-C reaches local jobs too (one process
    group): they are given a few seconds to end before what still runs is listed."""
    launches = [launch for launch in launched_jobs(results_root, name) if launch.folder == folder]
    if by_ctrl_c:
        wait_for_local_jobs(launches, timeout_s=5.0)
    states = Counter(run_state(results_root, rid) for rid in run_ids)
    unfinished = len(run_ids) - sum(states[s] for s in FINISHED_STATES)
    live = [replace(launch, job_ids=launch.live()) for launch in launches]
    return interruption_note(name, results_root, [launch for launch in live if launch.job_ids], unfinished,
                             states[RunState.INTERRUPTED])


def launch_sweep(sweep: str | os.PathLike | Mapping[str, Any], overrides: Sequence[str] = (),
                 cluster: str | None = None) -> dict[str, Any]:
    """Launch a sweep from Python: a sweep name, a path to a sweep YAML file, or a sweep as a dict; `overrides`
    are the command line's (`dry_run=true`, `train.seed=1`, ...). Returns the manifest (name, overrides, runs
    with their run_id, label, FLOPs and current state, jobs); a dry run returns it without writing it."""
    if isinstance(sweep, Mapping):
        sweep_arg = register_sweep(sweep, "_python_api")
    else:
        sweep_arg = f"+sweep={os.fspath(sweep)}"
    args = [sweep_arg, *overrides, *([f"cluster={cluster}"] if cluster else [])]
    cfg = compose_launch_config(args)
    result = launch_result(cfg)
    written = Manifest.read(Manifest.path(result.results_root, result.name))
    manifest = (written or manifest_record(result.results_root, result.name, result.decisions, [], cfg.overrides)
                ).to_json()
    for run in manifest["runs"]:
        run["state"] = run_state(result.results_root, run["run_id"])
    return manifest


def launch_overrides(args: list[str]) -> list[str]:
    """A launch command line as Hydra composes conf/launch.yaml: run overrides (train.seed=1) go into `overrides`."""
    launch_args, run_args = split_run_overrides(register_sweeps(args))
    quoted = ",".join("'" + a.replace("\\", "\\\\").replace("'", "\\'") + "'" for a in run_args)
    return [*launch_args, f"overrides=[{quoted}]"] if run_args else launch_args
