"""Every setting checked before anything is created or submitted: unknown keys, ranges, and clear type errors.

`check_run_config` runs first in `plan_run`, so a launcher rejects a bad value at expansion time and a single
`python -m scaling.train` rejects it before making the run directory; the structure's own settings are declared by
each structure and checked right after (`scaling.structures.check_settings`). Each problem is one line that names
the field, what it must be, and a value that works. `describe_error` turns Hydra's composition errors (which bury
the reason in a chained exception) into such a line.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from typing import Any

from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from scaling.config.rules import (
    COUNT, NON_NEGATIVE_INT, Rule, above, at_least, fraction, one_of, optional, out_of_range,
)
from scaling.config.schema import (
    LOGGER_MODES, PARAMETRIZATIONS, SCHEDULES, TOKENIZERS, ClusterConfig, DataConfig, LaunchConfig,
    LoggerConfig, ModelConfig, RunConfig, StructureConfig, TrainConfig,
)

RUN_SECTIONS = {"model": ModelConfig, "structure": StructureConfig, "data": DataConfig, "train": TrainConfig,
                "logger": LoggerConfig}


class SettingError(ValueError):
    """A setting that is unknown or out of range; the message names it and the fix."""


STEPS = Rule(lambda v: all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in v),
             "a list of optimiser steps (integers >= 1)")
RUN_ID = Rule(lambda v: v is None or bool(re.fullmatch(r"[0-9a-f]{16}", str(v))), "null or a 16-digit run id")
DEVICE = Rule(lambda v: v in ("auto", "cpu", "cuda") or bool(re.fullmatch(r"cuda:\d+", str(v))),
              "auto, cpu, cuda or cuda:<index>")

RULES: dict[str, Rule] = {
    "model.width": COUNT, "model.base_width": COUNT, "model.depth": COUNT, "model.head_dim": COUNT,
    "model.ffn_ratio": above(0), "model.context": COUNT, "model.patch_size": COUNT, "model.pool": one_of("cls", "mean"),
    "model.ffn_experts": NON_NEGATIVE_INT, "model.ffn_top_k": COUNT, "model.parametrization": one_of(*PARAMETRIZATIONS),
    # the structure's own settings are declared by each structure (scaling.structures.check_settings)
    "structure.aux_weight": at_least(0),  # weighs the aux loss of any routed layer (btt_moe, model.ffn_experts)
    "data.tokenizer": one_of(*TOKENIZERS), "data.vocab_size": at_least(2, "an integer >= 2"),
    "data.val_fraction": fraction(upper_open=True, lower_open=True), "data.input_dim": COUNT,
    "data.teacher_width": COUNT, "data.teacher_depth": COUNT, "data.teacher_seed": NON_NEGATIVE_INT,
    "data.eval_examples": COUNT,
    "train.tokens": COUNT, "train.flops": optional(above(0)), "train.batch_size": COUNT, "train.lr": above(0),
    "train.schedule": one_of(*SCHEDULES), "train.warmup_tokens": NON_NEGATIVE_INT, "train.decay_frac": fraction(),
    "train.min_lr_frac": fraction(), "train.beta1": fraction(upper_open=True), "train.beta2": fraction(upper_open=True),
    "train.weight_decay": at_least(0), "train.grad_clip": at_least(0, "a finite number >= 0 (0 turns clipping off)"),
    "train.eval_points": NON_NEGATIVE_INT, "train.eval_batches": COUNT, "train.log_every": COUNT,
    "train.checkpoint_every_s": at_least(0), "train.seed": NON_NEGATIVE_INT, "train.device": DEVICE,
    "train.precision": one_of("auto", "fp32", "bf16"), "train.threads": COUNT, "train.diverge_factor": above(1),
    "train.snapshot_steps": STEPS, "train.fork_from": RUN_ID,
    "logger.mode": optional(one_of(*LOGGER_MODES)),
    "logger.project": Rule(lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty name"),
}

CLUSTER_RULES: dict[str, Rule] = {
    "cluster.kind": one_of("local", "debug", "slurm"), "cluster.runs_per_job": optional(COUNT),
    "cluster.parallel_jobs": optional(COUNT), "cluster.timeout_min": COUNT, "cluster.cpus_per_task": COUNT,
    "cluster.gpus_per_node": NON_NEGATIVE_INT, "cluster.tasks_per_node": COUNT, "cluster.nodes": COUNT,
    "cluster.mem_gb": optional(above(0)),
    "cluster.max_num_timeout": NON_NEGATIVE_INT, "cluster.signal_delay_s": NON_NEGATIVE_INT,
}


def _default(schema: type, name: str) -> Any:
    field = {f.name: f for f in dataclasses.fields(schema)}[name]
    return field.default if field.default is not dataclasses.MISSING else None


def _check(node: DictConfig, rules: dict[str, Rule], schemas: dict[str, type]) -> None:
    for key, rule in rules.items():
        section, name = key.split(".")
        value = node[section][name]
        if not rule.ok(value):
            raise SettingError(out_of_range(key, value, rule.want, _default(schemas[section], name)))


def check_known_keys(node: DictConfig, schema: type, prefix: str = "", skip: tuple[str, ...] = ()) -> None:
    """Reject keys the schema does not define (`+train.lrr=0.1` adds one that Hydra accepts silently)."""
    known = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key in node.keys():
        if key in skip:
            continue
        if key not in known:
            nested = [f"{name}.{key}" for name, hint in hints.items() if dataclasses.is_dataclass(hint)
                      and key in {f.name for f in dataclasses.fields(hint)}]
            close = nested or [prefix + c for c in difflib.get_close_matches(str(key), list(known), n=1)]
            fix = f"did you mean {close[0]}?" if close else \
                f"the settings here are {', '.join(prefix + k for k in known)}"
            raise SettingError(f"{prefix}{key} is not a setting; {fix}")
        value = node[key]
        if isinstance(value, DictConfig) and dataclasses.is_dataclass(hints[key]):
            check_known_keys(value, hints[key], f"{prefix}{key}.")


def check_run_config(cfg: DictConfig) -> None:
    """Unknown keys anywhere in a run config, then every range rule; raises SettingError (one line)."""
    check_known_keys(cfg, RunConfig)
    _check(cfg, RULES, RUN_SECTIONS)


def check_launch_config(cfg: DictConfig) -> None:
    """Unknown launch options and cluster settings out of range; raises SettingError (one line)."""
    check_known_keys(cfg, LaunchConfig, skip=("sweep",))  # the sweep file is checked by scaling.launch.sweeps
    _check(cfg, CLUSTER_RULES, {"cluster": ClusterConfig})
    c = cfg.cluster
    if c.kind == "slurm" and c.signal_delay_s >= 60 * c.timeout_min:
        raise SettingError(f"cluster.signal_delay_s={c.signal_delay_s} must be below the time limit "
                           f"cluster.timeout_min={c.timeout_min} (in seconds: {60 * c.timeout_min}), or the run is "
                           "signalled as soon as it starts; lower it or raise cluster.timeout_min")


_TYPE_WORDS = {int: "an integer, e.g. 128", float: "a number, e.g. 0.003", bool: "true or false", str: "a string"}


def expected_type(full_key: str) -> str | None:
    """What the schema wants at `full_key` (`model.width`), in words; None if the key is not in a schema."""
    schema: Any = RunConfig
    for part in full_key.split("."):
        hints = typing.get_type_hints(schema) if dataclasses.is_dataclass(schema) else {}
        if part not in hints:
            schema = {"cluster": ClusterConfig}.get(part) if schema is RunConfig else None
            if schema is None:
                return None
            continue
        schema = hints[part]
    args = [a for a in typing.get_args(schema) if a is not type(None)]
    base = args[0] if typing.get_origin(schema) is typing.Union and args else schema
    if typing.get_origin(base) in (list, tuple):
        return "a list, e.g. [a,b]"
    return _TYPE_WORDS.get(base)


def describe_error(err: BaseException) -> str:
    """One line for a config error: Hydra's wrapped cause with the expected type, or the error's own message."""
    cause = err.__cause__
    if isinstance(err, HydraException) and isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or ""
        reason = str(cause).split("\n")[0]
        override = re.search(r"override (\S+)", str(err))
        where = override.group(1) if override else key
        schema = getattr(cause, "object_type", None)
        if "not in" in reason and key and dataclasses.is_dataclass(schema):  # an unknown key
            prefix = key.rpartition(".")[0] + "." if "." in key else ""
            close = difflib.get_close_matches(key.rpartition(".")[2], [f.name for f in dataclasses.fields(schema)], n=1)
            guess = f"; did you mean {prefix}{close[0]}?" if close else ""
            return f"{key} is not a setting{guess}"
        want = expected_type(key) if key else None
        return f"{where}: {reason}" + (f"; {key} takes {want}" if want else "")
    if isinstance(err, MissingConfigException):
        lines = [line.strip() for line in str(err).split("\n") if line.strip()]
        options = [line for line in lines[2:] if not line.startswith(("Config search path", "provider="))]
        return f"{lines[0]}; choose one of: {', '.join(options)}" if options else lines[0]
    return str(err)


_FLOAT_LITERAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+|[+-]?\d+\.\d*")


def integral_overrides(overrides: list[str]) -> list[str]:
    """`train.tokens=2e6` -> `train.tokens=2000000` for integer settings: Hydra reads 2e6 as a float, which an
    int field refuses. Only whole values are rewritten (2.5e0 stays, and fails with the expected type)."""
    out = []
    for override in overrides:
        key, eq, value = override.partition("=")
        name = key.lstrip("+~")
        if eq and _FLOAT_LITERAL.fullmatch(value) and expected_type(name) == _TYPE_WORDS[int]:
            number = float(value)
            if math.isfinite(number) and number == int(number):
                override = f"{key}={int(number)}"
        out.append(override)
    return out
