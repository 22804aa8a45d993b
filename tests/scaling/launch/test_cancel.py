"""Stopping a sweep: the launcher's note when Ctrl-C or SIGTERM stops it, and `scaling.status ... cancel=true`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling.launch.cancel import (LaunchedJobs, interruption_note, launched_jobs, record_jobs,
                                   terminate_as_interrupt)
from scaling.launch.status import count_states
from scaling.store.results import read_json
from scaling.store.states import RunState
from sweep_fixtures import REPO, TINY_BASE


def test_launches_record_their_jobs_and_only_live_controllers_count(tmp_path):
    folder = tmp_path / "submitit" / "grid" / "20260101-000000-1"
    folder.mkdir(parents=True)
    record_jobs(folder, "local", [str(os.getpid()), "999999999"])
    [launch] = launched_jobs(tmp_path, "grid")
    assert (launch.kind, launch.job_ids, launch.folder) == ("local", (str(os.getpid()), "999999999"), folder)
    assert launch.live() == ()  # this process is no submitit controller, and no process has the other pid
    slurm = LaunchedJobs("slurm", "elsewhere", ("12_0", "12_1"), folder)
    assert slurm.live() == ("12_0", "12_1")  # Slurm knows which have ended: scancel is given them all
    (folder.parent / "broken").mkdir()
    (folder.parent / "broken" / "jobs.json").write_text("{")
    assert len(launched_jobs(tmp_path, "grid")) == 1


def test_the_note_says_what_still_runs_and_how_to_stop_it(tmp_path):
    live = LaunchedJobs("local", "host", ("41", "42"), tmp_path / "logs")
    note = interruption_note("grid", "/r", [live], unfinished=3, interrupted=0)
    assert note == (f"launcher stopped; 3 run(s) of sweep 'grid' not finished, still running in local job(s) 41, "
                    f"42 (logs in {tmp_path / 'logs'}). Stop them: python -m scaling.status +sweep=grid "
                    "results_root=/r cancel=true; follow them: python -m scaling.status +sweep=grid results_root=/r "
                    "wait=true")
    assert interruption_note("grid", "/r", [], unfinished=2, interrupted=2) == (
        "launcher stopped, and its jobs too: 2 run(s) of sweep 'grid' not finished; 2 interrupted run(s) resume "
        "from their checkpoints when you launch again")


def test_sigterm_interrupts_like_ctrl_c_inside_only():
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with terminate_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def cli(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, **kwargs)


def wait_for(check, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


@pytest.mark.slow
def test_sigterm_on_a_local_launch_names_its_jobs_and_cancel_stops_them(tmp_path):
    results = tmp_path / "results"
    log = tmp_path / "launch.log"
    args = [sys.executable, "-m", "scaling.train", "-m", *TINY_BASE, "train.tokens=4000000", "structure=dense,btt",
            f"results_root={results}", "cluster=local", "cluster.parallel_jobs=2", "sweep_name=stopme"]
    with log.open("w") as out:  # a file, not a pipe: the jobs inherit the launcher's output
        launcher = subprocess.Popen(args, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_for(lambda: len(list(results.glob("runs/*/progress.json"))) == 2, 600), log.read_text()
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=600) == 128 + signal.SIGTERM
    finally:
        if launcher.poll() is None:
            launcher.kill()
    text = log.read_text()
    [launch] = launched_jobs(results, "stopme")
    assert "Traceback" not in text
    assert (f"interrupted: launcher stopped; 2 run(s) of sweep 'stopme' not finished, still running in local job(s) "
            f"{', '.join(launch.job_ids)} (logs in {launch.folder}). Stop them: python -m scaling.status "
            f"+sweep=stopme results_root={results} cancel=true") in text
    run_ids = [r["run_id"] for r in read_json(results / "sweeps" / "stopme.json")["runs"]]
    assert count_states(str(results), run_ids)[RunState.RUNNING] == 2  # the jobs kept training
    assert launch.live() == launch.job_ids

    cancel = cli("scaling.status", "+sweep=stopme", f"results_root={results}", "cancel=true", cwd=tmp_path,
                 timeout=600)
    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout.startswith(f"stopped 2 local job(s) (SIGTERM to pids {', '.join(launch.job_ids)})")
    assert wait_for(lambda: not launch.live(), 600)  # both jobs ended
    assert count_states(str(results), run_ids) == {RunState.INTERRUPTED: 2}  # checkpointed, resumable
    again = cli("scaling.status", "+sweep=stopme", f"results_root={results}", "cancel=true", cwd=tmp_path,
                timeout=600)
    assert again.stdout.startswith("sweep 'stopme': no job of it is running")
