"""`scaling.launch cluster=slurm` against the real local Slurm cluster (slurm/cluster.sh): job arrays, the
status CLI, relaunch dedupe, and preemption -> checkpoint -> requeue -> resume to the uninterrupted loss curve.

A time-limit test is left out: Slurm's smallest limit is a minute and it checks limits only every ~30 s, so it
would cost minutes; a time limit reaches the run as the same USR2 (`--signal=USR2@delay`) that the preemption
test sends by hand, through the same submitit handler.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import submitit

from scaling.train.checkpoint import load_checkpoint
from scaling.store.paths import RunPaths
from scaling.config.compose import compose_run_config
from scaling.launch.submit import launch
from scaling.store.results import iter_run_dirs, read_json, read_jsonl, read_summary, run_dir
from scaling.launch.status import count_states
from scaling.train.loop import train
from sweep_fixtures import REPO, TINY_BASE, launch_cfg, tiny_sweep

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

# One CPU per task, so the 2-core test node runs two array tasks at once; the signal delay must stay below the
# time limit, or Slurm sends USR2 as soon as the job starts.
SLURM = ["cluster=slurm", "cluster.cpus_per_task=1", "cluster.timeout_min=5", "cluster.signal_delay_s=30"]
JOB_TIMEOUT_S = 150  # generous for a loaded 2-core machine; the jobs here take 5-40 s
WALL_FIELDS = ("wall_s", "tokens_per_s", "flops_per_s")  # wall-clock measurements differ between two runs


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def poll(read: Callable[[], Any], accept: Callable[[Any], bool], timeout_s: float) -> Any:
    """Read until `accept` holds or the time is up; return the last read."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while not accept(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
    return value


def sacct_rows(job_id: str, fields: str = "JobID,State") -> list[list[str]]:
    """One row per allocation and attempt (--duplicates keeps the attempts before a requeue), oldest first."""
    out = sh("sacct", "--duplicates", "--allocations", "--noheader", "--parsable2", "-o", fields, "-j", job_id)
    return [line.split("|") for line in out.splitlines() if line]


def job_logs(job: submitit.Job) -> str:
    return f"--- stdout ---\n{job.stdout()}\n--- stderr ---\n{job.stderr()}"


@pytest.fixture
def submitted() -> Iterator[list[submitit.Job]]:
    """Jobs a test submits; any still queued or running when it ends (a failure) are cancelled."""
    jobs: list[submitit.Job] = []
    yield jobs
    for job in jobs:
        if not job.done():
            job.cancel(check=False)


def test_sweep_runs_as_a_job_array_and_relaunch_submits_nothing(slurm_cluster, tmp_path, submitted, capsys):
    sweep = tiny_sweep(axes={"model.width": [32]}, budgets={"tokens": [2048]})  # dense and btt: two runs
    jobs = launch(launch_cfg(tmp_path, sweep, *SLURM))
    submitted.extend(jobs)
    # wait=false (the slurm default): launch returns once the array is queued, long before a run can finish.
    queued = sh("squeue", "--noheader", "--array", "-o", "%i", "-j", jobs[0].job_id.split("_")[0]).split()
    manifest = read_json(tmp_path / "sweeps" / "tiny.json")
    run_ids = [r["run_id"] for r in manifest["runs"]]
    assert count_states(str(tmp_path), run_ids)["completed"] == 0
    array_id = jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in jobs] == [f"{array_id}_0", f"{array_id}_1"]
    assert sorted(queued) == [j.job_id for j in jobs]
    assert manifest["jobs"] == [j.job_id for j in jobs] and len(run_ids) == 2

    # The status CLI finds the sweep's runs through the manifest (sweep.name) and waits for them.
    status = subprocess.run(
        [sys.executable, "-m", "scaling.status", "+sweep=quickstart", "sweep.name=tiny", f"results_root={tmp_path}",
         "wait=true"], cwd=REPO, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert status.returncode == 0, status.stdout + status.stderr + "".join(job_logs(j) for j in jobs)
    assert "sweep 'tiny': 2 runs: completed 2" in status.stdout

    summaries = {s["run_id"]: s for s in (read_summary(d) for d in iter_run_dirs(tmp_path))}
    assert sorted(summaries) == sorted(run_ids)
    for rid, summary in summaries.items():
        assert summary["status"] == "completed" and summary["sweep"] == "tiny" and summary["steps"] == 8
        evals = [r for r in read_jsonl(run_dir(tmp_path, rid) / "metrics.jsonl") if r["kind"] == "eval"]
        assert summary["final_val_loss"] == evals[-1]["val_loss"] and evals[-1]["step"] == 8
    # Each array task returned its run's summary to submitit.
    assert sorted(job.result()[0]["run_id"] for job in jobs) == sorted(run_ids)
    rows = poll(lambda: sacct_rows(array_id, "JobID,State,Start,End"),
                lambda rs: [r[1] for r in rs] == ["COMPLETED"] * 2, timeout_s=20)
    assert [r[:2] for r in rows] == [[f"{array_id}_0", "COMPLETED"], [f"{array_id}_1", "COMPLETED"]]
    starts, ends = [r[2] for r in rows], [r[3] for r in rows]
    assert max(starts) < min(ends)  # one CPU each: both tasks ran at the same time on the 2-CPU node

    capsys.readouterr()
    assert launch(launch_cfg(tmp_path, sweep, *SLURM)) == []
    assert "{'completed': 2}; 0 to run" in capsys.readouterr().out
    assert read_json(tmp_path / "sweeps" / "tiny.json")["jobs"] == manifest["jobs"]


def test_preempted_run_is_requeued_and_resumes_to_the_uninterrupted_curve(slurm_cluster, tmp_path, submitted,
                                                                          monkeypatch):
    run_overrides = ["structure=dense", "train.log_every=1", "train.eval_points=4"]
    steps = 512  # a few seconds of training on an idle machine: the signal lands mid-run
    sweep = tiny_sweep(base=[*TINY_BASE, *run_overrides], axes={"model.width": [32]},
                       variants={"dense": {}}, budgets={"tokens": [steps * 8 * 32]})
    root = tmp_path / "slurm"
    [job] = launch(launch_cfg(root, sweep, *SLURM))
    submitted.append(job)
    [rid] = [r["run_id"] for r in read_json(root / "sweeps" / "tiny.json")["runs"]]
    metrics = run_dir(root, rid) / "metrics.jsonl"

    # Preempt once training has started: USR2 to the job's steps, as a preempting scheduler (or submitit's
    # --signal=USR2@delay before the time limit) sends it. The run checkpoints; submitit requeues the job.
    started = poll(lambda: any(r["kind"] == "train" for r in read_jsonl(metrics)), bool, JOB_TIMEOUT_S)
    assert started, f"job {job.job_id} never started training ({job.state}):\n{job_logs(job)}"
    sh("scancel", "--signal=USR2", job.job_id)
    # The first checkpoint is the one taken on the signal (the periodic one is minutes away); the requeued
    # attempt overwrites it only when it finishes, at least the requeue delay (~10 s) later.
    checkpoint = RunPaths(run_dir(root, rid)).checkpoint
    assert poll(checkpoint.exists, bool, JOB_TIMEOUT_S), f"no checkpoint after USR2 ({job.state}):\n{job_logs(job)}"
    stopped_at = load_checkpoint(checkpoint.parent)["step"]
    assert 1 <= stopped_at < steps, f"USR2 reached the run at step {stopped_at} of {steps}, not mid-run"

    # Meanwhile, the same run uninterrupted in this process, with the one thread a Slurm task of one CPU gets
    # (the sums inside a matmul depend on the thread count).
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    reference = compose_run_config([*TINY_BASE, *run_overrides, f"train.tokens={steps * 8 * 32}",
                                    f"results_root={tmp_path / 'straight'}"])
    straight = train(reference)
    assert straight["run_id"] == rid and straight["restarts"] == 0

    assert poll(job.done, bool, JOB_TIMEOUT_S), f"job {job.job_id} not done ({job.state}):\n{job_logs(job)}"
    [summary] = job.result()
    assert summary["status"] == "completed" and summary["restarts"] == 1 and summary["steps"] == steps
    assert read_summary(run_dir(root, rid)) == summary
    states = poll(lambda: [r[1] for r in sacct_rows(job.job_id)], lambda s: s == ["REQUEUED", "COMPLETED"], 20)
    assert states == ["REQUEUED", "COMPLETED"]
    assert "Caught signal SIGUSR2" in job.stderr()

    def curve(path: Path) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in WALL_FIELDS} for r in read_jsonl(path)]

    resumed = curve(metrics)
    assert resumed == curve(run_dir(tmp_path / "straight", rid) / "metrics.jsonl")
    assert [r["step"] for r in resumed if r["kind"] == "train"] == list(range(1, steps + 1))
    assert summary["final_val_loss"] == straight["final_val_loss"]


def test_cancel_stops_a_sweeps_slurm_jobs_and_leaves_its_runs_resumable(slurm_cluster, tmp_path, submitted):
    """`scaling.status ... cancel=true` scancels the sweep's array (recorded in its launch's jobs.json): Slurm's
    SIGTERM reaches each run, which checkpoints and ends interrupted, no job left in the queue."""
    sweep = tiny_sweep(axes={"model.width": [32]}, budgets={"tokens": [8 * 32 * 100_000]})  # far longer than the test
    jobs = launch(launch_cfg(tmp_path, sweep, *SLURM))
    submitted.extend(jobs)
    array_id = jobs[0].job_id.split("_")[0]
    run_ids = [r["run_id"] for r in read_json(tmp_path / "sweeps" / "tiny.json")["runs"]]
    running = poll(lambda: count_states(str(tmp_path), run_ids)["running"], lambda n: n == 2, JOB_TIMEOUT_S)
    assert running == 2, "".join(job_logs(j) for j in jobs)
    cancel = subprocess.run(
        [sys.executable, "-m", "scaling.status", "+sweep=quickstart", "sweep.name=tiny", f"results_root={tmp_path}",
         "cancel=true"], cwd=REPO, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert cancel.stdout.startswith(f"scancel {array_id}: Slurm job(s) cancelled\nstopped\n"), cancel.stdout
    queued = poll(lambda: sh("squeue", "--noheader", "--array", "-o", "%i", "-j", array_id), lambda q: q == "", 60)
    assert queued == ""
    assert dict(count_states(str(tmp_path), run_ids)) == {"interrupted": 2}
    assert all(load_checkpoint(run_dir(tmp_path, rid)) is not None for rid in run_ids)
