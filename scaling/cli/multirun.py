"""`python -m scaling.train -m structure=dense,btt model.width=64,128`: Hydra's multirun, run as a sweep.

The swept keys become the axes of a sweep (their Cartesian product, like Hydra's basic sweeper), the other run
overrides its base, and `train.tokens=a,b` (or `train.flops=a,b`) its budgets. The sweep goes through
scaling.launch like a sweep file: every run validated before anything is submitted, finished runs skipped (a second
identical call submits nothing), `cluster=local|debug|slurm` and the other launch options apply.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser

from scaling.cli.command import CommandLineError
from scaling.config.compose import compose_run_config
from scaling.launch.submit import launch_sweep
from scaling.launch.sweeps import SweepError, split_run_overrides
from scaling.store.states import RunState

BUDGET_KEYS = {"train.tokens": "tokens", "train.flops": "flops"}


def multirun_sweep(run_args: Sequence[str]) -> dict[str, Any]:
    """A sweep spec for run overrides where some keys sweep (`a=1,2`, `a=range(1,4)`, `a=choice(x,y)`)."""
    base, axes = [], {}
    for override in OverridesParser.create().parse_overrides(list(run_args)):
        if override.is_sweep_override():
            axes[override.input_line.split("=", 1)[0]] = list(override.sweep_string_iterator())
        else:
            base.append(override.input_line)
    budgets = {kind: [float(v) for v in axes.pop(key)] for key, kind in BUDGET_KEYS.items() if key in axes}
    if len(budgets) > 1:
        raise CommandLineError("-m sweeps one budget: give train.tokens=a,b or train.flops=a,b, not both")
    if not budgets:
        train = compose_run_config(base).train
        budgets = {"flops": [train.flops]} if train.flops is not None else {"tokens": [train.tokens]}
    digest = hashlib.sha256(json.dumps([base, axes, budgets]).encode()).hexdigest()[:8]
    return {"name": f"multirun_{digest}", "base": base, "axes": axes, "budgets": budgets}


def multirun(args: Sequence[str]) -> int:
    """Train the grid the sweep overrides in `args` describe; launch options (cluster=..., dry_run=true) apply."""

    launch_args, run_args = split_run_overrides(args)
    spec = multirun_sweep(run_args)
    if not spec["axes"] and len(next(iter(spec["budgets"].values()))) == 1:
        print("note: -m with no swept key (a=1,2) runs one run")
    try:
        manifest = launch_sweep(spec, overrides=launch_args)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    states = [r["state"] for r in manifest["runs"]]
    return 1 if RunState.FAILED in states else 0
