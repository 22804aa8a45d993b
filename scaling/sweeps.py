"""Sweep files (`sweeps/NAME.yaml`) and their expansion into validated, planned runs.

A sweep declares:
    name, description
    base:     run overrides shared by every run, e.g. [model=gpt2, data=shakespeare, model.depth=2]
    axes:     {override key: [values]} crossed for every variant (lr, seed, ...)
    variants: {label: {overrides: [...], axes: {key: [values]}}}, e.g. one per structure, each with its own
              widths (per-structure width lists) or settings; the variant's axes are crossed with `axes`
    budgets:  exactly one of
              tokens: [...]            Cartesian token budgets
              flops: [...]             isoFLOP grid: every (variant x axes) point at each FLOP budget; tokens are
                                       derived from that model's FLOPs per token (train.flops)
              tokens_per_param: [...]  tokens = ratio x effective params (training FLOPs per token / 6)
Override values are Hydra override strings (`structure=btt`, `model.width=256`).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from scaling.config import LaunchConfig
from scaling.labels import default_label
from scaling.configs import compose_conf, compose_run_config, register_sweep_group, sweep_files
from scaling.plan import ConfigError, RunPlan, plan_run

BUDGET_KINDS = ("tokens", "flops", "tokens_per_param")
RUN_SECTIONS = ("model", "structure", "data", "train", "logger")
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


class SweepError(ValueError):
    """A sweep that cannot be expanded; the message lists every bad run with its field and fix."""


@dataclass
class PlannedRun:
    label: str  # human-readable: variant and axis values
    overrides: list[str]
    cfg: DictConfig
    plan: RunPlan
    axes: list[str] = field(default_factory=list)  # the run's swept `key=value` settings: sweep point and budget


@dataclass
class Expansion:
    name: str
    runs: list[PlannedRun] = field(default_factory=list)


def sweep_names(extra_dirs: Sequence[str] = ()) -> list[str]:
    return list(sweep_files(extra_dirs))


def register_sweeps(args: Sequence[str] = ()) -> list[str]:
    """`launch_schema` for conf/launch.yaml, and every sweep file (scaling.configs.sweep_dirs) as an option of
    the group `sweep`; returns `args` with the sweep folders and files they name resolved."""
    ConfigStore.instance().store(name="launch_schema", node=LaunchConfig)
    return register_sweep_group(args)


def split_run_overrides(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Arguments that address a run section (`train.seed=1`, `model=vit`) apply to every run of the sweep;
    the rest configure the launch (`cluster=slurm`, `dry_run=true`)."""
    launch_args, run_args = [], []
    for arg in args:
        key = arg.lstrip("+~").split("=", 1)[0]
        (run_args if key.split(".", 1)[0] in RUN_SECTIONS else launch_args).append(arg)
    return launch_args, run_args


def compose_launch_config(args: Sequence[str]) -> DictConfig:
    """conf/launch.yaml with `+sweep=NAME`, launch options (cluster=slurm, dry_run=true, ...) and run overrides
    for every run (train.seed=1, ...), which are appended to `overrides`."""
    launch_args, run_args = split_run_overrides(register_sweeps(args))
    cfg = compose_conf("launch", launch_args)
    cfg.overrides = [*cfg.overrides, *run_args]
    if cfg.get("sweep") is None:
        raise SweepError(f"no sweep given: pass +sweep=NAME with NAME one of {sweep_names()}")
    return cfg


def check_name(name: object) -> str:
    """Sweep names become file names (the manifest): letters, digits, `_`, `-`, `.`; no paths."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise SweepError(f"sweep.name={name!r} must be a plain name of letters, digits, '_', '-' or '.' "
                         "(not starting with '.'), e.g. my_sweep")
    return name


def _format(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format(v) for v in value) + "]"
    return str(value)


def _grid(axes: dict[str, Sequence[Any]] | None) -> list[list[str]]:
    """Cartesian product of {key: values} as lists of `key=value` overrides."""
    if not axes:
        return [[]]
    keys = list(axes)
    for key in keys:
        if not isinstance(axes[key], Sequence) or isinstance(axes[key], str) or len(axes[key]) == 0:
            raise SweepError(f"axis {key!r} must be a non-empty list of values, got {axes[key]!r}")
    return [[f"{k}={_format(v)}" for k, v in zip(keys, combo)] for combo in itertools.product(*axes.values())]


def _budget_overrides(budgets: dict[str, list[float]]) -> tuple[str, list[float]]:
    given = [k for k in BUDGET_KINDS if budgets.get(k)]
    unknown = set(budgets) - set(BUDGET_KINDS)
    if unknown or len(given) != 1:
        raise SweepError(f"sweep.budgets must set exactly one of {BUDGET_KINDS}; got {sorted(budgets)}")
    return given[0], list(budgets[given[0]])


def expand(sweep: DictConfig, extra_overrides: Sequence[str] = ()) -> Expansion:
    """All runs of a sweep, each composed, validated and planned. Raises SweepError listing every bad run."""
    spec = OmegaConf.to_container(sweep, resolve=True)
    name = check_name(spec.get("name"))
    base = list(spec.get("base") or [])
    axes = spec.get("axes") or {}
    variants = spec.get("variants") or {"default": {}}
    kind, values = _budget_overrides(spec.get("budgets") or {})
    expansion, errors, seen = Expansion(name=name), [], set()
    for label, variant in variants.items():
        variant = variant or {}
        for point in _grid({**axes, **(variant.get("axes") or {})}):
            overrides = [*base, *(variant.get("overrides") or []), *point, *extra_overrides]
            point_label = " ".join([label, *point])
            try:
                composed = compose_run_config(overrides)
            except Exception as err:  # Hydra names the bad key or value
                errors.append(f"run [{point_label}]: {type(err).__name__}: {err}")
                continue
            composed.sweep = name
            composed.label = label if spec.get("variants") else default_label(composed)
            for value in values:
                run_label = f"{point_label} {kind}={value:g}"
                try:
                    planned = _plan(composed.copy(), kind, value, overrides, run_label)
                except (ConfigError, SweepError) as err:
                    errors.append(f"run [{run_label}]: {err}")
                    continue
                planned.axes = [*point, f"{kind}={value:g}"]
                if planned.plan.run_id not in seen:
                    seen.add(planned.plan.run_id)
                    expansion.runs.append(planned)
    if errors:
        raise SweepError(f"sweep {name!r}: {len(errors)} invalid run(s); nothing was submitted\n  "
                         + "\n  ".join(errors))
    return expansion


def _plan(cfg: DictConfig, kind: str, value: float, overrides: list[str], label: str) -> PlannedRun:
    """Set the run's budget (tokens, FLOPs, or tokens per effective parameter) and plan it."""
    if kind == "tokens":
        cfg.train.tokens = int(value)
        cfg.train.flops = None
    elif kind == "flops":
        cfg.train.flops = float(value)
    else:
        cfg.train.flops = None
        effective_params = plan_run(cfg).train_flops_per_unit / 6
        cfg.train.tokens = int(value * effective_params)
    OmegaConf.resolve(cfg)
    return PlannedRun(label=label, overrides=overrides, cfg=cfg, plan=plan_run(cfg))
