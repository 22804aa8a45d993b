"""Run independent jobs (one structure's fits, one figure) on the machine's cores.

Each job is a pure function of its arguments, so results do not depend on the number of workers;
`workers=1` runs them in this process, in order.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parallel_map(fn: Callable[..., Any], jobs: Sequence[tuple], workers: int | None = None) -> list[Any]:
    """[fn(*job) for job in jobs], spread over `workers` processes (None: every available core)."""
    workers = min(workers or available_cores(), len(jobs))
    if workers <= 1:
        return [fn(*job) for job in jobs]
    # fork starts workers without re-importing numpy/scipy/pandas; other platforms use their default.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(_apply, [(fn, job) for job in jobs]))


def _apply(call: tuple[Callable[..., Any], tuple]) -> Any:
    fn, job = call
    return fn(*job)
