"""`python -m scaling.status +sweep=NAME [wait=true] [cancel=true]`: progress of a sweep, read from its run
directories; `cancel=true` first stops the sweep's jobs that still run (scaling.launch.cancel)."""

from __future__ import annotations

import scaling.omp_passive  # noqa: F401  (first: OMP_WAIT_POLICY before torch starts)

import sys

from scaling.cli.command import Command, CommandLineError, run_command
from scaling.launch.cancel import cancel_jobs, launched_jobs, wait_for_local_jobs
from scaling.launch.status import (STATUS_FLAGS, compose_status_config, log_status, status_overrides,
                                   sweep_runs, wait_for_jobs, wait_for_runs)
from scaling.launch.sweeps import SweepError
from scaling.store.results import checked_root
from scaling.store.states import RunState

CANCEL_WAIT_S = 60.0  # how long cancel=true waits for the stopped runs to checkpoint and end


COMMAND = Command("scaling.status", "launch", usage="progress of a sweep, read from its run directories.\n"
                  "  python -m scaling.status +sweep=NAME|path/to/sweep.yaml [wait=true] [cancel=true] "
                  "[results_root=DIR]\n"
                  "  (NAME: a sweep file's, or a -m grid's sweep_name / multirun_<hash>, read from its manifest)",
                  prepare=status_overrides)


def main(argv: list[str] | None = None) -> int:
    return run_command(COMMAND, sys.argv[1:] if argv is None else argv, status_command)


def flag(args: list[str], name: str) -> bool:
    """A status option `name=true|false` (the last one given); anything else is bad input."""
    values = [a.partition("=")[2].strip().lower() for a in args if a.lstrip("+").startswith(f"{name}=")]
    bad = [v for v in values if v not in ("true", "false")]
    if bad:
        raise CommandLineError(f"{name}={bad[0]}: {name} takes true or false; write {name}=true or {name}=false")
    return bool(values) and values[-1] == "true"


def status_command(args: list[str]) -> int:
    wait, cancel = flag(args, "wait"), flag(args, "cancel")
    args = [a for a in args if not a.lstrip("+").startswith(STATUS_FLAGS)]
    try:
        cfg = compose_status_config(args)
        results_root = str(checked_root(cfg.results_root, write=False))
        name, runs = sweep_runs(cfg)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run_ids = [r.run_id for r in runs]
    if cancel:
        launches = launched_jobs(results_root, name)
        lines = cancel_jobs(launches)
        print("\n".join(lines) if lines else f"sweep {name!r}: no job of it is running")
        if lines:  # the runs checkpoint at their next step, then their processes end
            stopped = wait_for_runs(results_root, run_ids, CANCEL_WAIT_S) and wait_for_local_jobs(launches,
                                                                                                  CANCEL_WAIT_S)
            print("stopped" if stopped else f"still stopping after {CANCEL_WAIT_S:.0f} s; check again with "
                  f"python -m scaling.status +sweep={name} results_root={results_root}")
    if wait:
        wait_for_jobs([], results_root, run_ids, desc=name, flops={r.run_id: r.flops for r in runs},
                      seconds={r.run_id: r.seconds for r in runs})
    states = log_status(results_root, name, run_ids)
    failed = states.get(RunState.FAILED) or states.get(RunState.CORRUPT)
    return 1 if failed or (wait and states.get(RunState.INTERRUPTED)) else 0

