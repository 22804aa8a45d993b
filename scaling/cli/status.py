"""`python -m scaling.status +sweep=NAME [wait=true]`: progress of a sweep, read from its run directories."""

from __future__ import annotations

import scaling.omp_passive  # noqa: F401  (first: OMP_WAIT_POLICY before torch starts)

import sys

from scaling.cli.command import Command, run_command
from scaling.launch.status import log_status, status_overrides, sweep_run_flops, wait_for_jobs
from scaling.launch.sweeps import SweepError, compose_launch_config
from scaling.store.results import checked_root
from scaling.store.states import RunState


COMMAND = Command("scaling.status", "launch", usage="progress of a sweep, read from its run directories.\n"
                  "  python -m scaling.status +sweep=NAME|path/to/sweep.yaml [wait=true] [results_root=DIR]",
                  prepare=status_overrides)


def main(argv: list[str] | None = None) -> int:
    return run_command(COMMAND, sys.argv[1:] if argv is None else argv, status_command)


def status_command(args: list[str]) -> int:
    waits = [a.partition("=")[2].strip().lower() for a in args if a.lstrip("+").startswith("wait=")]
    bad = [w for w in waits if w not in ("true", "false")]
    if bad:
        print(f"error: wait={bad[0]}: wait takes true or false; write wait=true or wait=false", file=sys.stderr)
        return 2
    wait = bool(waits) and waits[-1] == "true"
    args = [a for a in args if not a.lstrip("+").startswith("wait=")]
    try:
        cfg = compose_launch_config(args)
        results_root = str(checked_root(cfg.results_root, write=False))
        name, flops = sweep_run_flops(cfg)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run_ids = list(flops)
    if wait:
        wait_for_jobs([], results_root, run_ids, desc=name, flops=flops)
    states = log_status(results_root, name, run_ids)
    failed = states.get(RunState.FAILED) or states.get(RunState.CORRUPT)
    return 1 if failed or (wait and states.get(RunState.INTERRUPTED)) else 0

