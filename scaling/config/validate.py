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
import unicodedata
from pathlib import Path
from typing import Any

from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from scaling.config.rules import (
    Rule, at_least, fraction, integer, list_of, one_of, optional, out_of_range, within,
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

# Ceilings far above any run this harness trains, below where the arithmetic after them overflows or stalls:
WIDTH = integer(1, 2**20)  # a dense 2^20 x 2^22 FFN matrix still counts its storage in int64
DEPTH = integer(1, 1024)  # every block is built (on the meta device) when the run is planned
UNITS = integer(1, 10**15)  # tokens / examples: float64-exact step counts, log-spaced evaluation steps
SEED = integer(0, 2**63 - 1)  # torch.manual_seed and the int64 seed columns of the analysis
FLOPS = within(0, 1e30, lo_open=True)
LR = within(0, 1e6, lo_open=True)  # AdamW diverges at once far below this; lr 1e300 overflows float32
MULTIPLIER = within(0, 1e6)  # weights, lr multipliers and scales: a product of two must stay finite in float32
BOOL_WORDS = ("true", "false")

RULES: dict[str, Rule] = {
    "model.width": WIDTH, "model.base_width": WIDTH, "model.depth": DEPTH, "model.head_dim": WIDTH,
    "model.ffn_ratio": within(0, 1024, lo_open=True), "model.context": integer(1, 2**20),
    "model.patch_size": integer(1, 4096), "model.pool": one_of("cls", "mean"),
    "model.ffn_experts": integer(0, 1024), "model.ffn_top_k": integer(1, 1024),
    "model.attn_scale": MULTIPLIER, "model.input_lr_mult": MULTIPLIER,
    "model.parametrization": one_of(*PARAMETRIZATIONS),
    # the structure's own settings are declared by each structure (scaling.structures.check_settings)
    "structure.aux_weight": MULTIPLIER,  # weighs the aux loss of any routed layer (btt_moe, model.ffn_experts)
    "data.tokenizer": one_of(*TOKENIZERS), "data.vocab_size": integer(2, 2**16),  # token streams are uint16
    "data.val_fraction": fraction(upper_open=True, lower_open=True), "data.input_dim": WIDTH,
    "data.teacher_width": WIDTH, "data.teacher_depth": DEPTH, "data.teacher_seed": SEED,
    "data.eval_examples": integer(1, 10**8),
    "train.tokens": UNITS, "train.flops": optional(FLOPS), "train.batch_size": integer(1, 2**20), "train.lr": LR,
    "train.schedule": one_of(*SCHEDULES), "train.warmup_tokens": integer(0, 10**15), "train.decay_frac": fraction(),
    "train.min_lr_frac": fraction(), "train.beta1": fraction(upper_open=True), "train.beta2": fraction(upper_open=True),
    "train.weight_decay": MULTIPLIER, "train.grad_clip": at_least(0, "a finite number >= 0 (0 turns clipping off)"),
    "train.eval_points": integer(0, 1000), "train.eval_flops": list_of(FLOPS, 1000),
    "train.eval_batches": integer(1, 10**4), "train.log_every": integer(1, 10**15),
    "train.checkpoint_every_s": within(0, 1e9), "train.seed": SEED, "train.device": DEVICE,
    "train.precision": one_of("auto", "fp32", "bf16"), "train.threads": integer(1, 1024),
    "train.diverge_factor": within(1, 1e30, lo_open=True),
    "train.snapshot_steps": STEPS, "train.fork_from": RUN_ID,
    "logger.mode": optional(one_of(*LOGGER_MODES)),
    "logger.project": Rule(lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty name"),
    # OmegaConf's list[str] converts numbers to strings but keeps a nested list or mapping ([a,[b]]) as it is
    "logger.tags": Rule(lambda v: all(isinstance(t, str) for t in v), "a list of strings, e.g. [a,b]"),
}

CLUSTER_RULES: dict[str, Rule] = {
    "cluster.kind": one_of("local", "debug", "slurm"), "cluster.runs_per_job": optional(integer(1, 10**6)),
    "cluster.parallel_jobs": optional(integer(1, 4096)), "cluster.timeout_min": integer(1, 10**6),
    "cluster.cpus_per_task": integer(1, 4096), "cluster.gpus_per_node": integer(0, 64),
    "cluster.tasks_per_node": integer(1, 1024), "cluster.nodes": integer(1, 10**4),
    "cluster.mem_gb": optional(within(0, 1e6, lo_open=True)),
    "cluster.max_num_timeout": integer(0, 1000), "cluster.signal_delay_s": integer(0, 10**6),
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
    hints = typing.get_type_hints(schema)
    for key in node.keys():
        if key in skip:
            continue
        if key not in hints:
            raise SettingError(unknown_setting(f"{prefix}{key}", schema, prefix))
        value = node[key]
        if isinstance(value, DictConfig) and dataclasses.is_dataclass(hints[key]):
            check_known_keys(value, hints[key], f"{prefix}{key}.")


def unknown_setting(typed: str, schema: type, prefix: str = "") -> str:
    """`typed is not a setting` (a key under `prefix`, whose settings `schema` declares) with the nearest setting
    (`seed` -> train.seed, `trian.seed` -> train.seed) or, when none is near, the settings there."""
    hints = typing.get_type_hints(schema)
    name = typed[len(prefix):]
    sections = {f"{section}.": hint for section, hint in hints.items() if dataclasses.is_dataclass(hint)}
    nested = [section + name for section, hint in sections.items() if name in typing.get_type_hints(hint)]
    names = [*hints, *(section + field for section, hint in sections.items() for field in typing.get_type_hints(hint))]
    close = nested or difflib.get_close_matches(name, names, n=1)
    if close:
        return f"{typed} is not a setting; did you mean {prefix}{close[0]}?"
    return f"{typed} is not a setting; the settings here are {', '.join(prefix + k for k in hints)}"


def check_folder(key: str, value: Any) -> None:
    """A folder setting (data.cache_dir) whose path, or a folder above it, is a file cannot be made."""
    if not str(value).strip():
        raise SettingError(f"{key}={value!r} is empty; give a folder path (it is created if missing)")
    path = Path(str(value)).expanduser()
    for above in (path, *path.parents):
        if above.exists():
            if not above.is_dir():
                raise SettingError(f"{key}={value}: {above} is a file, not a folder; give a folder path (it is "
                                   "created if missing)")
            return


def check_run_config(cfg: DictConfig) -> None:
    """Unknown keys anywhere in a run config, then every range rule; raises SettingError (one line)."""
    check_known_keys(cfg, RunConfig)
    _check(cfg, RULES, RUN_SECTIONS)
    check_folder("data.cache_dir", cfg.data.cache_dir)


def check_launch_config(cfg: DictConfig, local_gpus: int = 0) -> None:
    """Unknown launch options and cluster settings out of range (`local_gpus`: the CUDA devices of this machine,
    where local and debug jobs run); raises SettingError (one line)."""
    check_known_keys(cfg, LaunchConfig, skip=("sweep",))  # the sweep file is checked by scaling.launch.sweeps
    _check(cfg, CLUSTER_RULES, {"cluster": ClusterConfig})
    if not (rule := integer(1, 10**9)).ok(cfg.max_runs):
        raise SettingError(out_of_range("max_runs", cfg.max_runs, rule.want, _default(LaunchConfig, "max_runs")))
    c = cfg.cluster
    if c.kind != "slurm" and c.gpus_per_node > local_gpus:
        raise SettingError(f"cluster.gpus_per_node={c.gpus_per_node}: cluster={c.kind} runs the jobs on this machine, "
                           f"which has {local_gpus} CUDA device(s); set cluster.gpus_per_node={local_gpus} (or "
                           "launch with cluster=slurm)")
    if c.kind != "slurm" and c.tasks_per_node != 1:  # scaling.launch.jobs exports a DDP group for Slurm tasks only
        raise SettingError(f"cluster.tasks_per_node={c.tasks_per_node}: cluster={c.kind} runs one task per job (DDP "
                           "over tasks needs cluster=slurm); set cluster.tasks_per_node=1 (or launch with "
                           "cluster=slurm)")
    if c.kind == "slurm" and c.signal_delay_s >= 60 * c.timeout_min:
        raise SettingError(f"cluster.signal_delay_s={c.signal_delay_s} must be below the time limit "
                           f"cluster.timeout_min={c.timeout_min} (in seconds: {60 * c.timeout_min}), or the run is "
                           "signalled as soon as it starts; lower it or raise cluster.timeout_min")


_TYPE_WORDS = {int: "an integer, e.g. 128", float: "a number, e.g. 0.003", bool: "true or false", str: "a string"}
_KEY_WORDS = {  # settings whose type alone does not say what to write
    "overrides": "a list of key=value run overrides, e.g. 'overrides=[train.seed=1,train.lr=0.01]'",
    "cluster.additional_parameters": "a mapping of sbatch options, e.g. "
                                     "cluster.additional_parameters={constraint:a100}",
}


def expected_type(full_key: str, root: type = RunConfig) -> str | None:
    """What the schema wants at `full_key` (`model.width`), in words; None if the key is not in a schema."""
    schema: Any = root
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
    if full_key in _KEY_WORDS:
        return _KEY_WORDS[full_key]
    if typing.get_origin(base) in (list, tuple):
        return "a list, e.g. [a,b]"
    if typing.get_origin(base) is dict:
        return "a mapping, e.g. {a:1,b:x}"
    return _TYPE_WORDS.get(base)


def check_bool_overrides(overrides: list[str], root: type = RunConfig) -> None:
    """A true/false setting takes true or false: OmegaConf also reads 0, 1, 2, yes, on, ... as booleans, so
    `dry_run=2` or `model.qk_norm=yes` would silently pick one."""
    for override in overrides:
        key, eq, value = override.partition("=")
        name = key.lstrip("+~")
        if eq and not name.strip():
            raise SettingError(f"{override}: no setting before '='; write key=value, e.g. train.seed=1")
        if eq and expected_type(name, root) == _TYPE_WORDS[bool] and value.strip().lower() not in BOOL_WORDS:
            raise SettingError(f"{name}={value}: {name} takes true or false; write {name}=true or {name}=false")


_FLAGS = "--help, --cfg job, --info, --hydra-help, --shell-completion, -m"


def _parse_reason(override: str) -> str:
    """Why Hydra's override grammar refused `override`, and what to type instead."""
    if override.startswith("-"):
        return (f"{override}: not a key=value override, and not a flag of this command (its flags: {_FLAGS}); "
                "settings are key=value, e.g. train.seed=1")
    odd = next((c for c in override if not c.isascii()), None)
    if odd is not None:
        name = unicodedata.name(odd, "an unnamed character")
        if unicodedata.category(odd) == "Nd":
            fix = f"type ASCII digits ({odd!r} is {unicodedata.digit(odd)})"
        elif unicodedata.category(odd) in ("Pd", "Sm") and any(w in name for w in ("MINUS", "DASH", "HYPHEN")):
            fix = "type the ASCII '-'"
        else:
            fix = "type ASCII, or quote the value: key='value'"
        return f"{override}: {odd!r} ({name}) is not read by the override grammar; {fix}"
    return (f"{override}: not a valid override; write key=value (a value with spaces or special characters in "
            "quotes, key='a b'; a list as key=[a,b])")


def describe_error(err: BaseException) -> str:
    """One line for a config error: Hydra's wrapped cause with the expected type, or the error's own message."""
    if isinstance(err, OverrideParseException):
        return _parse_reason(err.override)
    cause = err.__cause__
    if isinstance(err, HydraException) and isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or ""
        reason = str(cause).split("\n")[0]
        override = re.search(r"override (\S+)", str(err))
        where = override.group(1) if override else key
        schema = getattr(cause, "object_type", None)
        if "not in" in reason and key and dataclasses.is_dataclass(schema):  # an unknown key
            typed = re.search(r"override '([^']+)'", str(err))  # bogus.key, of which Hydra names bogus
            whole = typed.group(1) if typed and typed.group(1).startswith(f"{key}.") else key
            return unknown_setting(whole, schema, key.rpartition(".")[0] + "." if "." in key else "")
        want = (expected_type(key) or expected_type(key, LaunchConfig)) if key else None
        return f"{where}: {reason.rstrip('.')}; {key} takes {want}" if want else f"{where}: {reason}"
    if isinstance(err, InterpolationResolutionError):  # ${...} in a value that cannot be resolved
        found = re.search(r"full_key: (\S+)", str(err))
        key = getattr(err, "full_key", None) or (found.group(1) if found else None)
        reason = str(err).split("\n")[0]
        return f"{key + ': its' if key else 'a'} ${{...}} value cannot be resolved ({reason}); give a plain value, " \
               "or set what it names"
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
