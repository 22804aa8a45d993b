"""A run directory is owned by one process at a time: the lease file `<run_dir>/lease.json`.

Taking the lease is one atomic create-exclusive open (O_CREAT | O_EXCL), so of two launchers or jobs that race for
the same run exactly one wins; the other skips the run. The file records who holds it (host, pid, the pid's start
time, when it was taken). A lease left by a process that died is stale and may be broken:
  - on the same host: the pid is gone, or is now another process (a different start time);
  - on another host: neither the lease nor the run's heartbeat (heartbeat.json) was touched for HEARTBEAT_FRESH_S;
  - anywhere: the lease cannot be read (empty or half-written: its taker died between creating and writing it) and
    is older than TORN_STALE_S, far longer than that one write takes.
Breaking is itself serialised by a second create-exclusive file, so two processes never both break and retake it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from scaling.store.paths import RunPaths

BREAK_NAME = ".lease.break"
HEARTBEAT_FRESH_S = 300.0  # a run whose heartbeat (or lease) is younger than this is alive on some host
BREAK_STALE_S = 60.0  # a break marker older than this was left by a process that died while breaking
TORN_STALE_S = 10.0  # an unreadable lease older than this was left by a process that died while taking it
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holder:
    """Who holds a lease."""

    host: str
    pid: int
    pid_start: str  # the pid's start time in clock ticks (/proc/<pid>/stat), "" where unknown
    time: float  # when the lease was taken

    @property
    def torn(self) -> bool:
        """The lease could not be read (read_holder): who holds it is unknown; `time` is the file's."""
        return self.pid == TORN_PID

    def describe(self) -> str:
        since = time.strftime('%H:%M:%S', time.localtime(self.time))
        return f"an unknown process (unreadable lease, since {since})" if self.torn else \
            f"pid {self.pid} on {self.host} since {since}"


TORN_PID = -1  # the pid of a Holder read from an unreadable lease


def process_start(pid: int) -> str:
    """Start time of `pid` (field 22 of /proc/<pid>/stat), so a reused pid is told apart; "" if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int, start: str) -> bool:
    """Whether `pid` runs on this host and is the same process that recorded `start`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    return not start or process_start(pid) in ("", start)


def me() -> Holder:
    pid = os.getpid()
    return Holder(host=socket.gethostname(), pid=pid, pid_start=process_start(pid), time=time.time())


def read_holder(path: Path) -> Holder | None:
    """The lease's holder; None when there is no lease. An unreadable lease counts as held (by nobody known)."""
    try:
        data = json.loads(path.read_bytes())
        return Holder(host=str(data["host"]), pid=int(data["pid"]), pid_start=str(data.get("pid_start", "")),
                      time=float(data["time"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):  # torn or edited: judged by its age alone
        return Holder(host="?", pid=TORN_PID, pid_start="", time=_mtime(path) or 0.0)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def holder_alive(rdir: Path, holder: Holder) -> bool:
    """Same host: pid liveness. Elsewhere: the lease or the heartbeat was touched within HEARTBEAT_FRESH_S. An
    unreadable lease: younger than TORN_STALE_S (its taker may be writing it now)."""
    if holder.torn:
        return time.time() - holder.time < TORN_STALE_S
    if holder.host == socket.gethostname() and holder.pid > 0:
        return pid_alive(holder.pid, holder.pid_start)
    touched = max(filter(None, [holder.time, _mtime(RunPaths(rdir).lease), _heartbeat_time(rdir)]), default=0.0)
    return time.time() - touched < HEARTBEAT_FRESH_S


def _heartbeat_time(rdir: Path) -> float | None:
    try:
        return float(json.loads((RunPaths(rdir).heartbeat).read_bytes())["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def live_holder(rdir: Path) -> Holder | None:
    """The holder of the run's lease if it is alive, else None (no lease, or a stale one)."""
    holder = read_holder(RunPaths(rdir).lease)
    return holder if holder is not None and holder_alive(rdir, holder) else None


def _create_exclusive(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return True


class Lease:
    """`Lease.acquire(rdir)` returns a held lease or None (a live process holds it); `release()` drops it."""

    def __init__(self, rdir: Path, holder: Holder):
        self.dir = rdir
        self.holder = holder

    @property
    def path(self) -> Path:
        return RunPaths(self.dir).lease

    @classmethod
    def acquire(cls, rdir: Path) -> "Lease | None":
        rdir.mkdir(parents=True, exist_ok=True)
        holder = me()
        blob = json.dumps(asdict(holder)).encode()
        for _ in range(3):  # take it; else break a stale lease and try again
            if _create_exclusive(RunPaths(rdir).lease, blob):
                return cls(rdir, holder)
            if not _break_if_stale(rdir):
                return None
        return None

    def release(self) -> None:
        """Remove the lease if it is still ours (a lease broken as stale and retaken by another is left alone)."""
        if read_holder(self.path) == self.holder:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _break_if_stale(rdir: Path) -> bool:
    """Remove a stale lease under the break marker; True when the lease is gone (so it may be taken again)."""
    marker = rdir / BREAK_NAME
    if not _create_exclusive(marker, str(os.getpid()).encode()):
        age = time.time() - (_mtime(marker) or time.time())
        if age < BREAK_STALE_S:
            return False  # someone else is breaking it right now
        marker.unlink(missing_ok=True)  # its breaker died mid-break
        return _break_if_stale(rdir)
    try:
        holder = read_holder(RunPaths(rdir).lease)
        if holder is None:
            return True
        if holder_alive(rdir, holder):
            return False
        if holder.torn:
            logger.warning(f"warning: {RunPaths(rdir).lease}: unreadable (empty or half-written) and "
                           f"{time.time() - holder.time:.0f} s old: its taker died while writing it; taken as stale")
        (RunPaths(rdir).lease).unlink(missing_ok=True)
        return True
    finally:
        marker.unlink(missing_ok=True)
