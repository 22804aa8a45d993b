"""`python -m scaling.status +sweep=NAME [wait=true]`: progress of a sweep, read from its run directories."""

from __future__ import annotations

import scaling.omp_passive  # noqa: F401  (first: OMP_WAIT_POLICY before torch starts)

import sys
from pathlib import Path

from scaling.cli.command import Command, run_command
from scaling.launch.status import (compose_status_config, log_status, status_overrides, sweep_run_flops,
                                   wait_for_jobs)
from scaling.launch.sweeps import SweepError
from scaling.store.states import RunState


COMMAND = Command("scaling.status", "launch", usage="progress of a sweep, read from its run directories.\n"
                  "  python -m scaling.status +sweep=NAME|path/to/sweep.yaml [wait=true] [results_root=DIR]\n"
                  "  (NAME: a sweep file's, or a -m grid's sweep_name / multirun_<hash>, read from its manifest)",
                  prepare=status_overrides)


def main(argv: list[str] | None = None) -> int:
    return run_command(COMMAND, sys.argv[1:] if argv is None else argv, status_command)


def status_command(args: list[str]) -> int:
    wait = any(a in ("wait=true", "wait=True") for a in args)
    args = [a for a in args if not a.startswith("wait=")]
    try:
        cfg = compose_status_config(args)
        name, flops = sweep_run_flops(cfg)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results_root, run_ids = str(Path(cfg.results_root).resolve()), list(flops)
    if wait:
        wait_for_jobs([], results_root, run_ids, desc=name, flops=flops)
    states = log_status(results_root, name, run_ids)
    failed = states.get(RunState.FAILED) or states.get(RunState.CORRUPT)
    return 1 if failed or (wait and states.get(RunState.INTERRUPTED)) else 0

