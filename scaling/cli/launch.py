"""`python -m scaling.launch +sweep=NAME`: expand, validate, dedupe, cost and submit a sweep (scaling.launch.submit)."""

from __future__ import annotations

import scaling.omp_passive  # noqa: F401  (first: OMP_WAIT_POLICY before torch starts)

import sys

from scaling.cli.command import Command, run_command
from scaling.launch.submit import launch, launch_overrides
from scaling.launch.sweeps import SweepError, compose_launch_config


COMMAND = Command("scaling.launch", "launch", usage="expand, validate, dedupe, cost and submit a sweep.\n"
                  "  python -m scaling.launch +sweep=NAME|path/to/sweep.yaml [sweep_dir=DIR] [dry_run=true] "
                  "[cluster=local|debug|slurm] [run overrides, e.g. train.seed=1]", prepare=launch_overrides)


def _launch_command(args: list[str]) -> int:
    try:
        launch(compose_launch_config(args))
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(COMMAND, sys.argv[1:] if argv is None else argv, _launch_command)

