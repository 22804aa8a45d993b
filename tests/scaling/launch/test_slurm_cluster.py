"""The local Slurm cluster (slurm/cluster.sh) works end to end with submitit: jobs, arrays, requeue, accounting.

Every job here really runs under slurmd; the callables below are pickled by value, because the job's Python
cannot import this test module.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import submitit

from scaling.config.compose import compose_run_config
from scaling.store.results import read_jsonl, read_summary, run_dir, run_id

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

REPO_ROOT = Path(__file__).resolve().parents[3]
JOB_TIMEOUT_S = 60  # generous for a loaded 2-core machine; a healthy job here takes 1-20 s


def job_facts(x: int) -> dict[str, Any]:
    """What a job sees of its allocation, plus a result computed from its input."""
    return {
        "double": 2 * x,
        "job_id": os.environ["SLURM_JOB_ID"],
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "cpus": sorted(os.sched_getaffinity(0)),
    }


def fail_with_boom() -> None:
    raise ValueError("boom")


class RecordAttempts(submitit.helpers.Checkpointable):
    """Appends SLURM_RESTART_COUNT to `log` on each attempt; the first attempt waits to be preempted.

    Checkpointable's checkpoint() resubmits the same callable, so the requeued attempt finds the log and returns.
    """

    def __init__(self, log: Path) -> None:
        self.log = log

    def __call__(self) -> int:
        with self.log.open("a") as fh:
            fh.write(os.environ.get("SLURM_RESTART_COUNT", "0") + "\n")
        attempts = len(self.log.read_text().split())
        if attempts == 1:
            time.sleep(120)  # the test sends USR2 long before this ends
        return attempts


def make_executor(folder: Path, **params: Any) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    assert executor.cluster == "slurm"
    executor.update_parameters(timeout_min=5, cpus_per_task=1, mem_gb=1, **params)
    return executor


def wait_done(job: submitit.Job[Any], timeout_s: float = JOB_TIMEOUT_S) -> None:
    """Wait for a job, failing (and cancelling it) instead of hanging when it does not finish."""
    deadline = time.monotonic() + timeout_s
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} not done after {timeout_s}s (state {job.state}); stderr:\n{job.stderr()}")
        time.sleep(0.2)


def run(*cmd: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30, env=env).stdout.strip()


def poll(read: Callable[[], Any], accept: Callable[[Any], bool], timeout_s: float = 20) -> Any:
    """Read until `accept` holds (accounting and node state lag a moment behind events), returning the last read."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while not accept(value) and time.monotonic() < deadline:
        time.sleep(0.5)
        value = read()
    return value


def sacct_states(job_id: str) -> list[str]:
    """States of every attempt of a job, oldest first ("CANCELLED by 0" reads as CANCELLED)."""
    out = run("sacct", "--duplicates", "--allocations", "--noheader", "--parsable2", "-o", "State", "-j", job_id)
    return [line.split()[0] for line in out.splitlines() if line]


def test_sinfo_shows_the_single_node_idle(slurm_cluster) -> None:
    assert os.environ["SLURM_CONF"] == str(slurm_cluster.conf)
    line = poll(lambda: run("sinfo", "--noheader", "-o", "%P|%a|%D|%t"), lambda out: out.endswith("|idle"))
    assert line == "debug*|up|1|idle"


def test_submitted_job_returns_its_result(slurm_cluster, tmp_path: Path) -> None:
    job = make_executor(tmp_path).submit(job_facts, 3)
    wait_done(job)
    facts = job.result()
    assert facts["double"] == 6
    assert facts["job_id"] == job.job_id
    assert facts["array_task_id"] is None
    # task/affinity pins the job to its one allocated core (all of that core's hardware threads).
    threads_per_core = int(run("sinfo", "--noheader", "-o", "%Z"))
    assert len(facts["cpus"]) == threads_per_core


def test_job_array_runs_every_task_with_its_own_task_id(slurm_cluster, tmp_path: Path) -> None:
    executor = make_executor(tmp_path, slurm_array_parallelism=5)
    jobs = executor.map_array(job_facts, range(5))
    for job in jobs:
        wait_done(job)
    results = [job.result() for job in jobs]

    array_id = jobs[0].job_id.split("_")[0]
    assert [job.job_id for job in jobs] == [f"{array_id}_{i}" for i in range(5)]
    assert [r["array_task_id"] for r in results] == ["0", "1", "2", "3", "4"]
    assert [r["double"] for r in results] == [0, 2, 4, 6, 8]
    assert len({r["job_id"] for r in results}) == 5  # every task is its own Slurm job


def test_preempted_checkpointable_job_is_requeued_and_finishes(slurm_cluster, tmp_path: Path) -> None:
    log = tmp_path / "attempts.txt"
    job = make_executor(tmp_path).submit(RecordAttempts(log))
    poll(log.exists, bool, timeout_s=JOB_TIMEOUT_S)
    assert log.exists(), f"job {job.job_id} never started; stderr:\n{job.stderr()}"

    run("scancel", "--signal=USR2", job.job_id)  # what a preempting scheduler sends
    wait_done(job)

    assert job.result() == 2
    assert log.read_text().split() == ["0", "1"]  # SLURM_RESTART_COUNT of each attempt
    states = poll(lambda: sacct_states(job.job_id), lambda s: s == ["REQUEUED", "COMPLETED"])
    assert states == ["REQUEUED", "COMPLETED"]


def test_sacct_reports_completed_failed_and_cancelled_jobs(slurm_cluster, tmp_path: Path) -> None:
    executor = make_executor(tmp_path)
    ok = executor.submit(job_facts, 1)
    failing = executor.submit(fail_with_boom)
    executor.update_parameters(slurm_additional_parameters={"hold": True})  # pending until cancelled
    held = executor.submit(job_facts, 2)
    held.cancel()

    # A job that dies without writing a result is "done" only through accounting: without slurmdbd, waiting on
    # `held` would hang forever.
    for job in (ok, failing, held):
        wait_done(job)
    assert ok.result()["double"] == 2
    with pytest.raises(submitit.core.utils.FailedJobError, match="boom"):
        failing.result()
    assert held.state.startswith("CANCELLED")

    expected = {ok.job_id: ["COMPLETED"], failing.job_id: ["FAILED"], held.job_id: ["CANCELLED"]}
    for job_id, states in expected.items():
        assert poll(lambda: sacct_states(job_id), lambda s: s == states) == states, f"sacct for job {job_id}"
    # submitit reads the same accounting (without it, job.state would stay UNKNOWN).
    assert ok.get_info(mode="force")["State"] == "COMPLETED"


TEMPLATE_STEPS = 512  # a few seconds of training on an idle machine: the requeue lands mid-run


def test_sbatch_template_passes_overrides_and_requeues_on_usr2(slurm_cluster, tmp_path: Path) -> None:
    """The template's #SBATCH lines are accepted and its overrides reach `python -m scaling.train`; USR2 to its
    batch shell requeues the job, Slurm's SIGTERM makes the run checkpoint, and the requeued job resumes it."""
    overrides = ["model=gpt2", "model.width=32", "model.base_width=32", "model.depth=1", "model.head_dim=16",
                 "model.context=32", "train.batch_size=8", "train.lr=0.01", "train.log_every=1",
                 "train.eval_points=4", f"train.tokens={TEMPLATE_STEPS * 8 * 32}", "logger.mode=disabled",
                 f"results_root={tmp_path / 'results'}"]
    rdir = run_dir(tmp_path / "results", run_id(compose_run_config(overrides)))
    sbatch_options = ["--parsable", f"--output={tmp_path}/out-%j.txt", "--mem=1G", "--cpus-per-task=1"]
    template = str(REPO_ROOT / "slurm" / "sbatch_template.sh")
    env = {**os.environ, "PYTHON": sys.executable}  # sbatch exports its environment
    job_id = subprocess.run(["sbatch", *sbatch_options, template, *overrides], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    try:
        started = poll(lambda: any(r["kind"] == "train" for r in read_jsonl(rdir / "metrics.jsonl")), bool,
                       timeout_s=2 * JOB_TIMEOUT_S)
        assert started, f"job {job_id} never started training; sacct: {sacct_states(job_id)}"
        run("scancel", "--signal=USR2", "--batch", job_id)  # what --signal=B:USR2@120 sends before the time limit
        states = poll(lambda: sacct_states(job_id), lambda s: s == ["REQUEUED", "COMPLETED"],
                      timeout_s=3 * JOB_TIMEOUT_S)
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)  # a no-op once the job has ended

    assert states == ["REQUEUED", "COMPLETED"]
    summary = read_summary(rdir)
    assert summary["status"] == "completed" and summary["steps"] == TEMPLATE_STEPS
    assert summary["restarts"] == 1  # the requeued attempt resumed from the checkpoint taken on SIGTERM
    rows = read_jsonl(rdir / "metrics.jsonl")
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, TEMPLATE_STEPS + 1))
    out = (tmp_path / f"out-{job_id}.txt").read_text()  # --open-mode=append keeps both attempts' output
    call = f"{sys.executable} -m scaling.train {' '.join(overrides)}"
    assert f"job {job_id} attempt 0 on " in out and f"job {job_id} attempt 1 on " in out
    assert out.count(call) == 2
    assert f"requeuing job {job_id}" in out
    assert out.rstrip().endswith("scaling.train exited with status 0")


# Every process a machine's loss takes with it: the daemons and the jobs' step daemons.
CLUSTER_PROCESSES = ("slurmstepd", "slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged")


def test_start_after_a_crash_cancels_the_jobs_the_dead_cluster_left(slurm_cluster, tmp_path: Path) -> None:
    """A cluster killed mid-job (a crash, a machine that goes away) leaves its jobs in the state directory, and
    slurmctld recovers them on the next start: a recovered "running" job would hold the node until its time limit.
    `start` cancels them and comes up idle. This kills the test cluster and starts it again."""
    state_file = slurm_cluster.conf.parent / "state" / "job_state"
    saved_before = state_file.stat().st_mtime
    marker = f"sleep {300 + os.getpid() % 97}"  # a command line no other process has
    # --chdir: the jobs this crash kills once left "Killed" in slurm-<id>.out files in their working directory, which
    # defaults to pytest's (the checkout)
    wrap = ["--parsable", f"--chdir={tmp_path}", f"--output={tmp_path}/%j.out", "--wrap", marker]
    running = run("sbatch", *wrap)
    pending = run("sbatch", "--array=0-3", *wrap).split(";")[0]  # the node's 2 cores: some tasks stay pending
    assert poll(lambda: run("squeue", "-h", "-j", running, "-o", "%t"), lambda s: s == "R") == "R"
    # slurmctld writes its job state a moment after a change; the crash must come after that write.
    assert poll(lambda: state_file.stat().st_mtime > saved_before, bool), "slurmctld never saved the new jobs"

    for name in CLUSTER_PROCESSES:
        subprocess.run(["pkill", "-KILL", "-x", name], check=False, timeout=10)
    subprocess.run(["pkill", "-KILL", "-f", marker], check=False, timeout=10)
    assert poll(lambda: subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode, bool)

    start = subprocess.run(["bash", str(REPO_ROOT / "slurm" / "cluster.sh"), "start"], capture_output=True,
                           text=True, timeout=120, check=False)
    assert start.returncode == 0, f"start after a crash failed:\n{start.stdout}{start.stderr}"
    cancelled = re.search(r"cancelling job\(s\) ([\d ]+) left in", start.stdout)
    assert cancelled is not None, start.stdout
    assert set(cancelled.group(1).split()) == {running, pending}
    assert run("squeue", "-h") == ""
    assert run("sinfo", "--noheader", "-o", "%t") == "idle"
    job = make_executor(tmp_path).submit(job_facts, 4)  # the restarted cluster runs new work
    wait_done(job)
    assert job.result()["double"] == 8
