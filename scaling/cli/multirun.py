"""`python -m scaling.train -m structure=dense,btt model.width=64,128`: Hydra's multirun, run as a sweep.

The swept keys make a grid (their Cartesian product, like Hydra's basic sweeper). Keys that change what is compared
(the structure group and `structure.*`, `model.parametrization`, `model.ffn_experts`) become the sweep's variants,
each labelled by what it varies (`dense`, `btt_r4`: scaling.config.labels.variant_label), so the report fits one
frontier per variant; the other swept keys are its axes, the other run overrides its base, and `train.tokens=a,b`
(or `train.flops=a,b`) its budgets. `sweep_name=NAME` names the sweep (its manifest, what `scaling.status +sweep=NAME`
reads); without it the name is `multirun_<hash of the grid>`, so the same command line finds the same sweep.
The sweep goes through scaling.launch like a sweep file: every run validated before anything is submitted, finished
runs skipped, `cluster=local|debug|slurm` and the other launch options apply.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser

from scaling.cli.command import CommandLineError
from scaling.config.compose import compose_run_config
from scaling.config.labels import variant_label
from scaling.launch.submit import launch_sweep
from scaling.launch.sweeps import SweepError, check_name, split_run_overrides, sweep_names
from scaling.store.states import RunState

BUDGET_KEYS = {"train.tokens": "tokens", "train.flops": "flops"}
NAME_KEY = "sweep_name"
VARIANT_KEYS = ("model.parametrization", "model.ffn_experts")  # and the structure group with its settings


def is_variant_key(key: str) -> bool:
    """Whether a swept key changes what is compared (a variant) rather than where (an axis)."""
    return key == "structure" or key.startswith("structure.") or key in VARIANT_KEYS


def _variants(base: list[str], swept: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """One variant per point of the swept variant keys, labelled by what it varies."""
    variants = {}
    for combo in itertools.product(*swept.values()):
        varied = dict(zip(swept, combo))
        overrides = [f"{key}={value}" for key, value in varied.items()]
        variants[variant_label(compose_run_config([*base, *overrides]), varied)] = {"overrides": overrides}
    return variants


def multirun_sweep(run_args: Sequence[str], name: str | None = None) -> dict[str, Any]:
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
    if name is None:
        digest = hashlib.sha256(json.dumps([base, axes, budgets]).encode()).hexdigest()[:8]
        name = f"multirun_{digest}"
    swept = {key: values for key, values in axes.items() if is_variant_key(key)}
    spec = {"name": name, "base": base, "axes": {k: v for k, v in axes.items() if k not in swept},
            "budgets": budgets}
    return spec | ({"variants": _variants(base, swept)} if swept else {})


def sweep_name(launch_args: list[str]) -> tuple[str | None, list[str]]:
    """`sweep_name=NAME` (checked: it names the manifest file) and the launch arguments without it."""
    names = [a.split("=", 1)[1] for a in launch_args if a.startswith(f"{NAME_KEY}=")]
    try:
        name = check_name(names[-1]) if names else None
    except SweepError as err:
        raise CommandLineError(str(err).replace("sweep.name", NAME_KEY)) from None
    if name in sweep_names():
        raise CommandLineError(f"{NAME_KEY}={name} is the name of a sweep file, whose manifest this grid would "
                               "overwrite; pick another name")
    return name, [a for a in launch_args if not a.startswith(f"{NAME_KEY}=")]


def multirun(args: Sequence[str]) -> int:
    """Train the grid the sweep overrides in `args` describe; launch options (cluster=..., dry_run=true) apply."""
    launch_args, run_args = split_run_overrides(args)
    name, launch_args = sweep_name(launch_args)
    spec = multirun_sweep(run_args, name)
    if not spec["axes"] and not spec.get("variants") and len(next(iter(spec["budgets"].values()))) == 1:
        print("note: -m with no swept key (a=1,2) runs one run")
    try:
        manifest = launch_sweep(spec, overrides=launch_args)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    roots = [a.split("=", 1)[1] for a in launch_args if a.startswith("results_root=")]
    where = f" results_root={Path(roots[-1]).resolve()}" if roots else ""
    print(f"sweep {manifest['name']}: python -m scaling.status +sweep={manifest['name']}{where}")
    states = [r["state"] for r in manifest["runs"]]
    return 1 if RunState.FAILED in states else 0
