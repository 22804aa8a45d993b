"""Process-wide settings: the CPU settings training and the benchmarks share, and where log records go.

- OpenMP waiting: every entry point (the CLIs, the submitit job) first imports `scaling.omp_passive`, which sets
  OMP_WAIT_POLICY=PASSIVE unless the environment already sets it, so idle OpenMP threads sleep instead of
  spinning. On a shared or oversubscribed machine a spinning thread takes the core its partner (or the compiled
  structured GEMM's threads, structures/native.py) needs, which stalls every parallel region; measured on 2
  cores, BTT layers ran up to 1.4x faster with it. It only acts if set before torch starts, hence first;
  importing the `scaling` package itself changes no environment variable.
- Freed memory: `keep_freed_memory()` asks glibc malloc to keep freed blocks for reuse (no mmap for large
  blocks, no trimming), so each step's large activations do not page-fault anew. train() calls it.
- Console output: the library reports through `logging` (loggers under `scaling` and `analysis`) and prints
  nothing itself; `log_to_console()` shows those records as bare lines (below WARNING on stdout, from WARNING up
  on stderr), as print() did; the commands (scaling.cli, analysis.cli) and the submitit job call it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

OMP_WAIT_DEFAULT = "PASSIVE"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def default_omp_wait() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless the environment chose otherwise (see the module docstring)."""
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_DEFAULT)


def keep_freed_memory() -> bool:
    """Ask glibc malloc to keep freed memory (large blocks from the heap, never trimmed); False where there is
    no glibc or it refused."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))


class ConsoleHandler(logging.Handler):
    """A record as its bare message: below WARNING on stdout, from WARNING up on stderr. The stream is looked up
    when the record is written, so a redirected or captured sys.stdout (a job log, pytest) receives it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def log_to_console(names: tuple[str, ...] = ("scaling", "analysis")) -> None:
    """Show the INFO and higher records of these loggers on the console, once each (calling again changes
    nothing); they go there only, not on to the root logger's handlers."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
            logger.addHandler(ConsoleHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False
