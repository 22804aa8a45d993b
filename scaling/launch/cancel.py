"""A sweep's jobs: where each launch records them, which still run, how to stop them, and what an interrupted
launcher says.

Each launch that submits writes `<results_root>/submitit/<sweep>/<stamp>-<pid>/jobs.json` (cluster kind, host, job
ids) next to its jobs' logs. `python -m scaling.status +sweep=NAME cancel=true` stops the jobs still running: a
local job (its id is its submitit controller's pid, on the host that launched it) gets SIGTERM, which the
controller hands to the run, and a Slurm job `scancel`, which sends the same SIGTERM; either way the run checkpoints
at its next step and shows as interrupted, and launching the sweep again resumes it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from scaling.store.results import atomic_write_json

JOBS_FILE = "jobs.json"
LOCAL_CONTROLLER = "submitit.local._local"  # the module a local job's process runs


@dataclass(frozen=True)
class LaunchedJobs:
    """The jobs one launch submitted: the cluster kind, the host it ran on, the job ids, the folder of their logs."""

    kind: str
    host: str
    job_ids: tuple[str, ...]
    folder: Path

    def live(self) -> tuple[str, ...]:
        """Local jobs whose controller still runs here (its pid, running submitit's controller on this folder);
        Slurm jobs as recorded (Slurm knows which have ended). Jobs of another host: none known to be alive."""
        if self.kind != "local":
            return self.job_ids if self.kind == "slurm" else ()
        return tuple(j for j in self.job_ids if self.host == socket.gethostname() and _is_controller(j, self.folder))


def _is_controller(pid: str, folder: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return False
    words = [w.decode(errors="replace") for w in cmdline]
    return LOCAL_CONTROLLER in words and any(w.startswith(str(folder)) for w in words)


def record_jobs(folder: Path, kind: str, job_ids: Sequence[str]) -> Path:
    """Write the launch's jobs.json into `folder` (the parent of the jobs' own folders)."""
    path = folder / JOBS_FILE
    atomic_write_json(path, {"kind": kind, "host": socket.gethostname(), "jobs": list(job_ids)})
    return path


def launched_jobs(results_root: str | os.PathLike, name: str) -> list[LaunchedJobs]:
    """Every launch of sweep `name` that recorded its jobs, oldest first (an unreadable record is skipped)."""
    out = []
    for path in sorted((Path(results_root) / "submitit" / name).glob(f"*/{JOBS_FILE}")):
        try:
            record = json.loads(path.read_text())
            out.append(LaunchedJobs(record["kind"], record["host"], tuple(map(str, record["jobs"])), path.parent))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def cancel_jobs(launches: Sequence[LaunchedJobs]) -> list[str]:
    """Stop every live job of `launches`; one line per launch that had any, saying what was stopped."""
    lines = []
    for launch in launches:
        live = launch.live()
        if not live:
            continue
        if launch.kind == "local":
            for pid in live:
                os.kill(int(pid), signal.SIGTERM)
            lines.append(f"stopped {len(live)} local job(s) (SIGTERM to pids {', '.join(live)})")
        else:
            arrays = sorted({j.split("_", 1)[0] for j in live})
            result = subprocess.run(["scancel", *arrays], capture_output=True, text=True, timeout=60)
            note = f" ({' '.join(result.stderr.split())})" if result.returncode else ""
            lines.append(f"scancel {' '.join(arrays)}: Slurm job(s) cancelled{note}")
    return lines


def wait_for_local_jobs(launches: Sequence[LaunchedJobs], timeout_s: float) -> bool:
    """Wait until no local job of `launches` runs, at most `timeout_s`; return whether none does."""
    deadline = time.monotonic() + timeout_s
    while any(launch.kind == "local" and launch.live() for launch in launches):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def interruption_note(name: str, results_root: str, live: Sequence[LaunchedJobs], unfinished: int,
                      interrupted: int) -> str:
    """What a launcher stopped by Ctrl-C or SIGTERM says: the jobs still running (`live`: each launch with the ids
    of its live jobs) and how to stop or follow them, or that nothing runs any more and how to resume."""
    status = f"python -m scaling.status +sweep={name} results_root={results_root}"
    if live:
        jobs = "; ".join(f"{launch.kind} job(s) {', '.join(launch.job_ids)} (logs in {launch.folder})"
                         for launch in live)
        return (f"launcher stopped; {unfinished} run(s) of sweep {name!r} not finished, still running in {jobs}. "
                f"Stop them: {status} cancel=true; follow them: {status} wait=true")
    resume = f"; {interrupted} interrupted run(s) resume from their checkpoints when you launch again" \
        if interrupted else ""
    return f"launcher stopped, and its jobs too: {unfinished} run(s) of sweep {name!r} not finished{resume}"


class LaunchInterrupted(KeyboardInterrupt):
    """The launcher was stopped (Ctrl-C or SIGTERM) while waiting for its jobs; the message says what still runs."""

    def __init__(self, note: str, by_ctrl_c: bool):
        super().__init__(note)
        self.exit_code = 128 + (signal.SIGINT if by_ctrl_c else signal.SIGTERM)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises KeyboardInterrupt as Ctrl-C does (main thread only: elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
