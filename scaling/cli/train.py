"""`python -m scaling.train`: one run, or with -m the grid launched as a sweep (scaling.cli.multirun).

    python -m scaling.train model=gpt2 structure=btt model.width=256 train.tokens=2e6
    python -m scaling.train -m structure=dense,btt model.width=64,128    # the grid, launched as a sweep
    python -m scaling.train --help                                       # config groups and options (Hydra's flags)
"""

from __future__ import annotations

import scaling.omp_passive  # noqa: F401  (first: OMP_WAIT_POLICY before torch starts)

import sys

from scaling.cli.command import Command, run_command
from scaling.cli.multirun import multirun
from scaling.config.compose import compose_run_config
from scaling.config.validate import describe_error
from scaling.store.files import RunFileError
from scaling.store.states import RunState
from scaling.train.loop import train
from scaling.train.plan import ConfigError


COMMAND = Command("scaling.train", "run", usage="train one run; -m a=1,2 b=x,y trains the grid as a sweep.\n"
                  "  python -m scaling.train [overrides, e.g. structure=btt model.width=256]\n"
                  "  python -m scaling.train -m structure=dense,btt model.width=64,128 [cluster=slurm] [dry_run=true]")


def main(argv: list[str] | None = None) -> int:
    return run_command(COMMAND, sys.argv[1:] if argv is None else argv, train_command, multirun=multirun)


def train_command(overrides: list[str]) -> int:
    """`python -m scaling.train key=value ...`: one run, its outcome in one line."""
    try:
        summary = train(compose_run_config(overrides))
    except (ConfigError, RunFileError) as err:
        print(f"error: {describe_error(err)}", file=sys.stderr)
        return 2
    if "skipped" in summary:
        return 0
    print(f"run {summary['run_id']}: {summary['status']}, final val loss {summary.get('final_val_loss')}, "
          f"{summary.get('tokens')} {summary.get('unit')}s, {summary.get('flops', 0):.3g} FLOPs")
    return 0 if summary["status"] == RunState.COMPLETED else 1

