"""Progress of a sweep, read from its run directories.

    python -m scaling.status +sweep=btt_gpt2            # counts per state, and the runs that failed
    python -m scaling.status +sweep=btt_gpt2 wait=true  # progress bar until every run has finished
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import submitit
from tqdm import tqdm

from scaling.store.lease import live_holder
from scaling.store.manifest import Manifest, ManifestError, ManifestRun
from scaling.store.results import read_summary, run_dir, runs_dir
from scaling.store.states import STOPPED_STATES, RunState
from scaling.train.progress import run_weights, work_done
from scaling.store.files import RunFileError
from scaling.config.compose import is_sweep_path, register_sweep, sweep_dir_args, sweep_files
from scaling.launch.sweeps import (
    SweepError, check_name, compose_launch_config, expand, manifest_only, register_sweeps, runs_on_cuda,
    split_run_overrides, sweep_names,
)
from scaling.launch.throughput import STARTUP_S, estimate_seconds
logger = logging.getLogger(__name__)
STATUS_FLAGS = ("wait=", "cancel=")  # the status command's own options


def run_state(results_root: str, rid: str) -> RunState:
    """pending | running | interrupted | completed | diverged | failed | corrupt, read from the run directory.

    A run is running while a live process holds its lease (scaling.store.lease: pid liveness on this host, heartbeat
    age elsewhere); a "running" summary with no live holder is an interrupted run (killed, or its node died)."""
    rdir = run_dir(results_root, rid)
    try:
        summary = read_summary(rdir)
    except RunFileError:
        return RunState.CORRUPT
    alive = live_holder(rdir) is not None
    if summary is None:
        return RunState.RUNNING if alive else RunState.PENDING
    status = RunState(summary["status"])
    if status != RunState.RUNNING:
        return status
    return RunState.RUNNING if alive else RunState.INTERRUPTED


def corrupt_note(results_root: str, rid: str) -> str:
    """The one-line error (file and fix) of a run in state `corrupt`."""
    try:
        read_summary(run_dir(results_root, rid))
    except RunFileError as err:
        return str(err)
    return f"run {rid}: readable again"


def with_manifest_sweeps(args: Sequence[str]) -> list[str]:
    """`args` with `+sweep=NAME` usable where NAME has no sweep file (a `-m` grid's `sweep_name`, or its
    `multirun_<hash>`): NAME is registered as a sweep of that name alone, whose runs sweep_runs reads from the
    manifest `<results_root>/sweeps/NAME.json`."""
    extra_dirs = sweep_dir_args(args)
    for arg in args:
        key, _, value = arg.lstrip("+").partition("=")
        if key == "sweep" and value and not is_sweep_path(value) and value not in sweep_files(extra_dirs):
            register_sweep({"name": value}, value)
    return list(args)


def compose_status_config(args: Sequence[str]):
    """The launch config a status command reads: a sweep file's, or a manifest-only sweep's (with_manifest_sweeps)."""
    return compose_launch_config(with_manifest_sweeps(args))


def sweep_runs(cfg) -> tuple[str, tuple[ManifestRun, ...]]:
    """A sweep's runs: from the manifest the launcher wrote, else by expanding the sweep file (ids, FLOPs and the
    estimated seconds of shapes whose throughput is known)."""
    results_root = str(Path(cfg.results_root).resolve())
    name = check_name(cfg.sweep.get("name"))
    path = Manifest.path(results_root, name)
    try:
        manifest = Manifest.read(path)
    except ManifestError as err:
        logger.warning(f"warning: {err}; reading the sweep file instead (the next launch rewrites it)")
        manifest = None
    if manifest is not None:
        return name, manifest.runs
    if manifest_only(cfg.sweep):
        raise SweepError(f"+sweep={name}: no sweep file of that name ({', '.join(sweep_names())}) and no manifest "
                         f"{path}; give a sweep name, or a -m grid's sweep_name with the results_root it ran with")
    expansion = expand(cfg.sweep, [*cfg.overrides, f"results_root={results_root}"], runs_on_cuda(cfg.cluster))
    seconds = estimate_seconds(expansion.runs, results_root, measure=False)
    return name, tuple(ManifestRun(r.plan.run_id, flops=r.plan.train_flops, seconds=seconds.get(r.plan.run_id))
                       for r in expansion.runs)


def count_states(results_root: str, run_ids: Sequence[str]) -> Counter:
    return Counter(run_state(results_root, rid) for rid in run_ids)


def wait_for_jobs(jobs: Sequence[submitit.Job], results_root: str, run_ids: Sequence[str],
                  desc: str = "sweep", flops: Mapping[str, float | None] | None = None,
                  seconds: Mapping[str, float | None] | None = None) -> None:
    """Block with a progress bar until the jobs end (or, with no jobs, every run has finished); job failures are
    reported, not raised: the run directories say which runs failed. The bar counts each run's estimated seconds
    (else its training FLOPs, else finished runs: scaling.train.progress.run_weights)."""
    pending = list(jobs)
    weights, unit = run_weights(run_ids, flops, seconds)
    startup = STARTUP_S if unit == "s" else 0.0
    run_states = {rid: run_state(results_root, rid) for rid in run_ids}
    with sweep_bar(desc, weights, unit, work_done(results_root, run_states, weights, flops, startup)) as bar:
        while True:
            if pending and all(isinstance(j, submitit.DebugJob) for j in pending):
                for job in pending:  # debug jobs run in this process when their result is asked for
                    _result_or_report(job)
                pending = []
            for job in [j for j in pending if j.done()]:
                _result_or_report(job)
                pending.remove(job)
            run_states = {rid: run_state(results_root, rid) for rid in run_ids}
            states = Counter(run_states.values())
            bar.update(work_done(results_root, run_states, weights, flops, startup) - bar.n)
            bar.set_postfix(dict(states))
            stopped = sum(states[s] for s in STOPPED_STATES)
            if (jobs and not pending) or (not jobs and stopped >= len(run_ids)):
                return
            time.sleep(2.0)


def sweep_bar(desc: str, weights: Mapping[str, float], unit: str, done: float) -> tqdm:
    """A sweep's progress bar, opened at the work already `done` (a resumed sweep's finished runs): that is where it
    starts, not progress, so its rate and ETA count only the work done since it opened (smoothing=0: the average
    over that time, steadier than tqdm's moving average of a bar that moves in jumps)."""
    return tqdm(total=sum(weights.values()), initial=done, desc=desc, smoothing=0,
                unit="compute-s" if unit == "s" else unit, unit_scale=unit != "run")


def wait_for_runs(results_root: str, run_ids: Sequence[str], timeout_s: float) -> bool:
    """Wait until no run of `run_ids` is running (its process ended), at most `timeout_s`; return whether none is."""
    deadline = time.monotonic() + timeout_s
    while RunState.RUNNING in count_states(results_root, run_ids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _result_or_report(job: submitit.Job) -> None:
    try:
        job.result()
    except Exception as err:
        logger.warning(f"job {job.job_id} failed: {err}")


def log_status(results_root: str, name: str, run_ids: Sequence[str]) -> Counter:
    """Log the count of runs per state and a line per failed or corrupt run; return the counts."""
    states = count_states(results_root, run_ids)
    logger.info(f"sweep {name!r}: {len(run_ids)} runs: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())))
    if not runs_dir(results_root).is_dir():  # e.g. the default ./results, read from another directory
        logger.info(f"  note: results_root={Path(results_root).resolve()} holds no runs yet; if the sweep ran, give "
                    "its results_root=DIR (a relative one is read from the current directory) or set "
                    "$SCALING_RESULTS")
    for rid in run_ids:
        state = run_state(results_root, rid)
        if state == RunState.FAILED:
            logger.info(f"  failed {rid}: {(read_summary(run_dir(results_root, rid)) or {}).get('error', '')}")
        elif state == RunState.CORRUPT:
            logger.info(f"  corrupt {rid}: {corrupt_note(results_root, rid)}")
    if states.get(RunState.INTERRUPTED):
        logger.info(f"  {states[RunState.INTERRUPTED]} interrupted run(s): launch the sweep again to resume them")
    return states


def sweep_status(sweep: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A sweep's progress from Python: `sweep` is a name or a sweep YAML path, `overrides` as on the command line
    (`results_root=...`). Returns {name, counts: {state: n}, runs: [{run_id, label, state, error?}]}."""
    cfg = compose_status_config([f"+sweep={os.fspath(sweep)}", *overrides])
    name, planned = sweep_runs(cfg)
    results_root = str(Path(cfg.results_root).resolve())
    runs = []
    for r in planned:
        state = run_state(results_root, r.run_id)
        run = {"run_id": r.run_id, "label": r.label, "state": state}
        if state == RunState.FAILED:
            run["error"] = (read_summary(run_dir(results_root, r.run_id)) or {}).get("error")
        runs.append(run)
    return {"name": name, "counts": dict(Counter(r["state"] for r in runs)), "runs": runs}


def status_overrides(args: list[str]) -> list[str]:
    """The part of a status command line that composes conf/launch.yaml (`wait=`, `cancel=` are status's own)."""
    own = [a for a in args if not a.startswith(STATUS_FLAGS)]
    return split_run_overrides(register_sweeps(with_manifest_sweeps(own)))[0]
