"""Run-directory leases: one owner at a time, stale leases of dead processes broken, and what status makes of them.

The race tests use real processes: a pool racing for one lease, two real launches of one sweep at once, and a
training process killed with SIGKILL.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling.config.compose import compose_run_config
from scaling.store.lease import HEARTBEAT_FRESH_S, TORN_STALE_S, Lease, live_holder, process_start
from scaling.store.paths import RunPaths
from scaling.store.results import atomic_write_json, iter_run_dirs, read_jsonl, read_summary, run_dir, run_id
from scaling.cli.status import main as status_main
from scaling.launch.status import run_state
from scaling.process import log_to_console
from scaling.train.steps import eval_steps
from sweep_fixtures import REPO, TINY_BASE, launch_cfg, tiny_sweep


def write_lease(rdir: Path, host: str, pid: int, pid_start: str = "", age_s: float = 0.0) -> None:
    rdir.mkdir(parents=True, exist_ok=True)
    path = RunPaths(rdir).lease
    path.write_text(json.dumps({"host": host, "pid": pid, "pid_start": pid_start, "time": time.time() - age_s}))
    os.utime(path, (time.time() - age_s, time.time() - age_s))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_one_holder_at_a_time_and_release_frees_it(tmp_path):
    first = Lease.acquire(tmp_path)
    assert first is not None
    data = json.loads((RunPaths(tmp_path).lease).read_text())
    assert data["host"] == socket.gethostname() and data["pid"] == os.getpid()
    assert data["pid_start"] == process_start(os.getpid()) != ""
    assert Lease.acquire(tmp_path) is None  # held by a live process (this one)
    assert live_holder(tmp_path).pid == os.getpid()
    first.release()
    assert not (RunPaths(tmp_path).lease).exists() and live_holder(tmp_path) is None
    with Lease.acquire(tmp_path) as again:
        assert again is not None
    assert not (RunPaths(tmp_path).lease).exists()


def test_stale_leases_are_broken(tmp_path):
    here = socket.gethostname()
    write_lease(tmp_path / "dead", here, dead_pid())
    write_lease(tmp_path / "reused", here, os.getpid(), pid_start="1")  # this pid, but another process's start
    write_lease(tmp_path / "far_old", "elsewhere", 4242, age_s=HEARTBEAT_FRESH_S + 5)
    for name in ("dead", "reused", "far_old"):
        assert live_holder(tmp_path / name) is None, name
        lease = Lease.acquire(tmp_path / name)
        assert lease is not None and lease.holder.pid == os.getpid(), name
    assert not list(tmp_path.rglob(".lease.break"))


def test_live_leases_elsewhere_are_respected(tmp_path):
    write_lease(tmp_path / "far_fresh", "elsewhere", 4242, age_s=10)
    write_lease(tmp_path / "far_beating", "elsewhere", 4242, age_s=HEARTBEAT_FRESH_S + 5)
    atomic_write_json(tmp_path / "far_beating" / "heartbeat.json", {"time": time.time(), "host": "elsewhere",
                                                                   "pid": 4242})
    (tmp_path / "torn").mkdir()
    RunPaths(tmp_path / "torn").lease.write_text('{"host": ')  # being written right now: fresh, so held
    for name in ("far_fresh", "far_beating", "torn"):
        assert live_holder(tmp_path / name) is not None, name
        assert Lease.acquire(tmp_path / name) is None, name


def test_an_old_torn_lease_is_stale_and_taken_over_with_a_line(tmp_path, capsys):
    """Killed between creating the lease and writing it: after TORN_STALE_S the next taker breaks it and says so."""
    log_to_console()
    for content in (b"", b'{"host": "a'):
        rdir = tmp_path / str(len(content))
        rdir.mkdir()
        RunPaths(rdir).lease.write_bytes(content)
        os.utime(RunPaths(rdir).lease, (time.time() - TORN_STALE_S - 1,) * 2)
        assert live_holder(rdir) is None
        lease = Lease.acquire(rdir)
        assert lease is not None and lease.holder.pid == os.getpid()
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"warning: {RunPaths(rdir).lease}: unreadable (empty or "
                                                        "half-written) and 11 s old")
        lease.release()


def _race(args) -> bool:
    rdir, barrier = args
    barrier.wait()
    lease = Lease.acquire(Path(rdir))
    if lease is None:
        return False
    time.sleep(0.5)  # hold it while the others try
    lease.release()
    return True


def test_racing_processes_get_one_lease(tmp_path):
    ctx = mp.get_context("fork")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(8)
        with ctx.Pool(8) as pool:
            won = pool.map(_race, [(str(tmp_path), barrier)] * 8)
    assert sum(won) == 1


def write_manifest(root: Path, name: str, rids: list[str]) -> None:
    atomic_write_json(root / "sweeps" / f"{name}.json", {"name": name, "runs": [{"run_id": r} for r in rids]})


@pytest.mark.slow
def test_a_killed_run_is_interrupted_at_once_and_status_wait_returns(tmp_path):
    overrides = [*TINY_BASE, "train.tokens=2000000", f"results_root={tmp_path}"]
    rid = run_id(compose_run_config(overrides))
    rdir = run_dir(tmp_path, rid)
    proc = subprocess.Popen([sys.executable, "-m", "scaling.train", *overrides], cwd=REPO)
    deadline = time.time() + 120
    while time.time() < deadline and not (rdir / "summary.json").exists():
        time.sleep(0.05)
    assert run_state(str(tmp_path), rid) == "running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (RunPaths(rdir).lease).exists() and read_summary(rdir)["status"] == "running"
    assert run_state(str(tmp_path), rid) == "interrupted"  # the pid is gone: no 300 s wait

    write_manifest(tmp_path, "quickstart", [rid])
    started = time.time()
    code = status_main(["+sweep=quickstart", f"results_root={tmp_path}", "wait=true"])
    assert code == 1 and time.time() - started < 30

    lease = Lease.acquire(rdir)  # the next start takes the dead process's lease over
    assert lease is not None and lease.holder.pid == os.getpid()


def _launch(root: str, barrier) -> None:
    sweep = tiny_sweep(axes={"model.width": [32]}, base=[*TINY_BASE, "logger.mode=offline", "logger.project=ci"])
    cfg = launch_cfg(Path(root), sweep, "cluster=local", "cluster.runs_per_job=1")
    barrier.wait()
    from scaling.launch.submit import launch

    log_to_console()  # as scaling.launch does: this process's report of the launch on its stdout
    launch(cfg)


@pytest.mark.slow
def test_two_concurrent_launches_train_each_run_once(tmp_path, capfd):
    """Both launchers see every run pending and submit it; the leases let one job train each run, the other skips."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_launch, args=(str(tmp_path), barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    out = capfd.readouterr().out
    assert out.count("2 runs {'pending': 2}; 2 to run") == 2  # a real race: both launchers submitted both runs

    logs = "".join(p.read_text() for p in tmp_path.glob("submitit/**/*_log.err"))
    assert logs.count("is training it") == 2  # each run: one job trained it, the other skipped it
    dirs = list(iter_run_dirs(tmp_path))
    assert len(dirs) == 2
    for rdir in dirs:
        summary = read_summary(rdir)
        assert summary["status"] == "completed" and summary["restarts"] == 0
        rows = read_jsonl(rdir / "metrics.jsonl")
        for kind in ("train", "eval"):
            steps = [r["step"] for r in rows if r["kind"] == kind]
            assert steps == sorted(set(steps)), kind  # no duplicated or out-of-order rows
        assert [r["step"] for r in rows if r["kind"] == "eval"] == eval_steps(summary["steps"], 2)
        assert len(list(rdir.glob("wandb/offline-run-*"))) == 1  # one wandb run per run directory
        assert not (RunPaths(rdir).lease).exists() and not list(rdir.glob(".*.tmp"))
