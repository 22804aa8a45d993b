"""Sweep files (`sweeps/NAME.yaml`) and their expansion into validated, planned runs.

A sweep declares:
    name, description
    base:     run overrides shared by every run, e.g. [model=gpt2, data=shakespeare, model.depth=2]
    axes:     {override key: [values]} crossed for every variant (lr, seed, ...)
    variants: {label: {overrides: [...], axes: {key: [values]}, ladder: [...]}}, e.g. one per structure, each
              with its own widths (per-structure width lists) or settings; the variant's axes are crossed with `axes`
    budgets:  exactly one of
              tokens: [...]            Cartesian token budgets
              flops: [...]             isoFLOP grid: every (variant x axes) point at each FLOP budget; tokens are
                                       derived from that model's FLOPs per token (train.flops)
              tokens_per_param: [...]  tokens = ratio x effective params (training FLOPs per token / 6)
              and, with flops and train.schedule=constant, `from_curves: true`: each point trains once, to the
              largest budget, and is evaluated (and read by the analysis) at the smaller ones on its curve;
              with it, `cooldown: 0.2` anneals every read: each point's constant-LR run is a trunk that keeps a
              snapshot where each budget's wsd decay (the last 20% of that budget's steps) starts, and a branch per
              budget decays from it (scaling.train.fork); the analysis reads the branches, not the trunk
              optional when every variant has a ladder
A variant's `ladder` replaces the sweep's budgets for that variant with rungs, each one budget with its own axes
(e.g. the widths around that budget's compute-optimal size, as `python -m analysis plan-next` writes them):
    ladder: [{flops: 1.0e15, axes: {model.width: [160, 192, 256]}}, {flops: 4.0e15, axes: {...}}]
A rung sets exactly one budget kind (one number) and its axes are crossed with the sweep's and the variant's.
Override values are Hydra override strings (`structure=btt`, `model.width=256`).
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

from scaling.train.budget_evals import attach_eval_budgets
from scaling.config.schema import LaunchConfig
from scaling.config.labels import default_label
from scaling.config.compose import (
    SEARCHPATH, SweepPathError, check_one_option, compose_conf, compose_run_config, is_sweep_path, read_sweep_yaml,
    register_sweep_group, sweep_dir_args, sweep_files, with_config_dirs,
)
from scaling.train.fork import fork_step
from scaling.train.plan import ConfigError, RunPlan, plan_run
from scaling.config.validate import SettingError, check_bool_overrides, check_launch_config, describe_error

BUDGET_KINDS = ("tokens", "flops", "tokens_per_param")
BUDGET_FLAGS = ("from_curves", "cooldown")
RUN_SECTIONS = ("model", "structure", "data", "train", "logger")
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")
SWEEP_KEYS = ("name", "description", "base", "axes", "variants", "budgets")
VARIANT_KEYS = ("overrides", "axes", "ladder")
RUNG_KEYS = (*BUDGET_KINDS, "axes")
ABSENT = object()  # a sweep key left out (one given as null is refused: check_sweep_shapes)


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
    """`launch_schema` for conf/launch.yaml, and every sweep file (scaling.config.compose.sweep_dirs) as an option of
    the group `sweep`; returns `args` with the sweep folders and files they name resolved. A file that does not
    parse is left out, so it affects only its own sweep (check_sweep_file reports it)."""
    ConfigStore.instance().store(name="launch_schema", node=LaunchConfig)
    return register_sweep_group(args)


def load_sweep_files(extra_dirs: Sequence[str] = ()) -> dict[Path, DictConfig | Exception]:
    """Every sweep file, parsed; a file that does not parse maps to its error (it affects only its own sweep)."""
    loaded: dict[Path, DictConfig | Exception] = {}
    for path in sweep_files(extra_dirs).values():
        try:
            spec = read_sweep_yaml(path)
            if not isinstance(spec, dict):
                raise SweepError(f"{path}: it holds a {type(spec).__name__}, not a mapping of sweep keys; see "
                                 "sweeps/quickstart.yaml for the format")
            loaded[path] = OmegaConf.create(spec)
        except (SweepError, SweepPathError) as err:
            loaded[path] = err
    return loaded


def check_sweep_file(name: str, extra_dirs: Sequence[str] = ()) -> None:
    """The file of `+sweep=NAME` parses, and no other sweep file declares the same `name:` (their manifests,
    results/sweeps/<name>.json, would overwrite each other)."""
    path = sweep_files(extra_dirs).get(name)
    if path is None:
        return  # Hydra reports an unknown sweep with the list of known ones
    files = load_sweep_files(extra_dirs)
    node = files[path]
    if isinstance(node, Exception):
        raise SweepError(str(node))
    same = [p.name for p, other in files.items() if p != path and isinstance(other, DictConfig)
            and (other.get("name") or p.stem) == (node.get("name") or path.stem)]
    if same:
        raise SweepError(f"{path.name} and {', '.join(same)} all declare name: {node.get('name') or path.stem} (a "
                         "file with no name: its stem); sweep names key their manifests (results/sweeps/<name>.json), "
                         "so give each file its own name")


def split_run_overrides(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Arguments that address a run section (`train.seed=1`, `model=vit`) apply to every run of the sweep;
    the rest configure the launch (`cluster=slurm`, `dry_run=true`); `hydra.searchpath` (--config-dir) both."""
    launch_args, run_args = [], []
    for arg in args:
        key, _, value = arg.lstrip("+~").partition("=")
        if key == SEARCHPATH:
            launch_args.append(arg)
            run_args.append(arg)
            continue
        if key == "overrides" and value.startswith("[") and value.endswith("]"):
            run_args.extend(list_items(value[1:-1]))  # conf/launch.yaml's `'overrides=[train.seed=1]'` form
            continue
        (run_args if key.split(".", 1)[0] in RUN_SECTIONS else launch_args).append(arg)
    return launch_args, run_args


def list_items(text: str) -> list[str]:
    """The items of a Hydra list's inside, split at top-level commas, each unquoted: `a=1,'b=[2,3]'` ->
    [a=1, b=[2,3]]. Hydra's grammar reads no `=` inside an unquoted list item, so the launcher splits it."""
    items, depth, quote, start = [], 0, "", 0
    for i, c in enumerate(text):
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "[{(":
            depth += 1
        elif c in "]})":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    stripped = [item.strip() for item in items if item.strip()]
    return [item[1:-1] if len(item) > 1 and item[0] == item[-1] and item[0] in "'\"" else item for item in stripped]


def compose_launch_config(args: Sequence[str]) -> DictConfig:
    """conf/launch.yaml with `+sweep=NAME`, launch options (cluster=slurm, dry_run=true, ...) and run overrides
    for every run (train.seed=1, ...), which are appended to `overrides`."""
    args = with_config_dirs(args)  # from Python: each folder made absolute and checked, as on the command line
    extra_dirs = sweep_dir_args(args)
    sweeps = [arg for arg in args if _override_key(arg) == "sweep"]
    if len(sweeps) > 1:
        raise SweepError(f"{' '.join(sweeps)}: a launch runs one sweep; give +sweep once (launch each sweep on its "
                         "own)")
    for arg in sweeps:
        value = arg.partition("=")[2]
        if not is_sweep_path(value):
            check_sweep_file(value, extra_dirs)
    launch_args, run_args = split_run_overrides(register_sweeps(args))
    try:
        check_bool_overrides(launch_args, LaunchConfig)
        check_one_option(launch_args)
        cfg = compose_conf("launch", launch_args)
        cfg.overrides = [*cfg.overrides, *run_args]
        if cfg.get("sweep") is None:
            raise SweepError(f"no sweep given: pass +sweep=NAME with NAME one of {sweep_names()}")
        if isinstance(cfg.sweep, DictConfig) and cfg.sweep.get("name") is None:  # a file with no name: its stem
            with open_dict(cfg.sweep):
                cfg.sweep.name = next(a.partition("=")[2] for a in reversed(launch_args) if _override_key(a) == "sweep")
        check_launch_config(cfg, torch.cuda.device_count())
    except SettingError as err:
        raise SweepError(str(err)) from None
    check_grid_size(cfg.sweep, cfg.max_runs)
    return cfg


def count_runs(name: str, spec: dict[str, Any]) -> int:
    """How many runs a sweep expands to (before dedupe), counted without composing any."""
    total = 0
    for label, variant in (spec.get("variants") or {"default": {}}).items():
        for axes, _, values, _ in _stages(name, spec, label, variant):
            total += math.prod(len(v) for v in axes.values()) * len(values)
    return total


def check_grid_size(sweep: DictConfig, max_runs: int) -> None:
    """A sweep larger than `max_runs` is refused before any run is composed (each takes milliseconds to
    seconds, so a typo'd grid would expand for minutes)."""
    spec = OmegaConf.to_container(sweep, resolve=True)
    name = check_name(spec.get("name"))
    if manifest_only(spec):  # nothing to expand
        return
    check_sweep_spec(name, spec, ())
    count = count_runs(name, spec)
    if count > max_runs:
        raise SweepError(f"sweep {name!r} expands to {count} runs, more than max_runs={max_runs}; shrink its axes, "
                         f"or raise the cap with max_runs={count} if the grid is meant")


def manifest_only(spec) -> bool:
    """A sweep known by its manifest alone (a -m grid, registered by status.with_manifest_sweeps): a name, no grid."""
    return set(spec) == {"name"}


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
    """Cartesian product of {key: values} (each checked by _axis_values) as lists of `key=value` overrides."""
    if not axes:
        return [[]]
    keys = list(axes)
    return [[f"{k}={_format(v)}" for k, v in zip(keys, combo)] for combo in itertools.product(*axes.values())]


def _budget_overrides(budgets: dict[str, Any]) -> tuple[str, list[float], bool]:
    """(kind, values, from_curves) of `sweep.budgets`."""
    given = [k for k in BUDGET_KINDS if budgets.get(k)]
    unknown = set(budgets) - set(BUDGET_KINDS) - set(BUDGET_FLAGS)
    if unknown or len(given) != 1:
        raise SweepError(f"sweep.budgets must set exactly one of {BUDGET_KINDS}; got {sorted(budgets)} (it may be "
                         "left out only when every variant has a ladder)")
    from_curves = budgets.get("from_curves", False)
    if not isinstance(from_curves, bool):
        raise SweepError(f"sweep.budgets.from_curves={from_curves!r} must be true or false")
    if from_curves and given[0] != "flops":
        raise SweepError("sweep.budgets.from_curves reads FLOP budgets off each run's curve, so it needs "
                         f"budgets.flops, not budgets.{given[0]}")
    cooldown = budgets.get("cooldown")
    if cooldown is not None and (not from_curves or isinstance(cooldown, bool)
                                 or not isinstance(cooldown, (int, float)) or not 0 < cooldown < 1):
        raise SweepError(f"sweep.budgets.cooldown={cooldown!r} must be a fraction in (0, 1), the share of each "
                         "budget's steps its decay takes (e.g. 0.2), with from_curves: true")
    return given[0], list(budgets[given[0]]), from_curves


def _curve_reads(budgets: dict[str, Any]) -> list[float]:
    """The budgets a `from_curves` sweep reads off its runs' curves (all but the largest, which they train to)."""
    return sorted(budgets["flops"])[:-1] if budgets.get("from_curves") is True and budgets.get("flops") else []


def _check_curve_schedule(cfg: DictConfig) -> None:
    """A run read at budgets below its own must not anneal to its end (only a constant LR makes its curve a read)."""
    if cfg.train.schedule != "constant":
        raise SweepError(f"sweep.budgets.from_curves needs train.schedule=constant (got {cfg.train.schedule!r}): "
                         "a decaying LR anneals only at the run's own end; add train.schedule=constant to base")


def _rungs(name: str, label: str, variant: dict[str, Any], shared: set[str]) -> list[tuple[dict, str, float]]:
    """A variant's ladder as (axes, budget kind, budget) per rung; every mistake names the rung and the fix."""
    ladder = variant["ladder"]
    where = f"sweep {name!r}: variant {label!r} ladder"
    if not isinstance(ladder, list) or not ladder:
        raise SweepError(f"{where} must be a non-empty list of rungs such as {{flops: 1.0e15, axes: {{model.width: "
                         "[128, 192]}}")
    rungs = []
    for i, rung in enumerate(ladder):
        if not isinstance(rung, dict):
            raise SweepError(f"{where}[{i}] is {rung!r}; a rung is a mapping {{flops: C, axes: {{key: [values]}}}}")
        unknown = sorted(set(rung) - set(RUNG_KEYS))
        kinds = [k for k in BUDGET_KINDS if k in rung]
        if unknown or len(kinds) != 1:
            raise SweepError(f"{where}[{i}] has keys {sorted(rung)}; a rung sets exactly one of {BUDGET_KINDS} "
                             "(one number) and optionally axes")
        value = rung[kinds[0]]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise SweepError(f"{where}[{i}].{kinds[0]}={value!r} must be one positive number, e.g. 1.0e15")
        axes = rung.get("axes") or {}
        if not isinstance(axes, dict):
            raise SweepError(f"{where}[{i}].axes must map override keys to lists of values, got {axes!r}")
        for key, values in axes.items():
            _axis_values(f"{where}[{i}].axes.{key}", values)
        twice = sorted(set(axes) & shared)
        if twice:
            raise SweepError(f"{where}[{i}].axes sets {twice}, which the sweep's or the variant's axes set too; "
                             "set each key in one place")
        rungs.append((axes, kinds[0], float(value)))
    return rungs


def _stages(name: str, spec: dict[str, Any], label: str,
            variant: dict[str, Any]) -> list[tuple[dict, str, list, bool]]:
    """(axes, budget kind, budgets to train, from_curves) to run a variant at: the sweep's axes and budgets (only the
    largest with from_curves), or one stage per rung."""
    axes = {**(spec.get("axes") or {}), **(variant.get("axes") or {})}
    if variant.get("ladder") is None:
        kind, values, from_curves = _budget_overrides(spec.get("budgets") or {})
        return [(axes, kind, [max(values)] if from_curves else values, from_curves)]
    return [({**axes, **extra}, kind, [value], False) for extra, kind, value in _rungs(name, label, variant, set(axes))]


def runs_on_cuda(cluster: DictConfig) -> bool | None:
    """Whether a cluster's jobs train on CUDA (what `train.device=auto` resolves to): Slurm jobs when they ask for
    GPUs; None for local and debug jobs, which run on this machine (scaling.train.plan.resolve_runtime asks it)."""
    return cluster.gpus_per_node > 0 if cluster.kind == "slurm" else None


def expand(sweep: DictConfig, extra_overrides: Sequence[str] = (), cuda: bool | None = None) -> Expansion:
    """All runs of a sweep, each composed, validated and planned (`auto` device and precision resolved for a
    machine with CUDA or without: `cuda`, None asks this one). Raises SweepError listing every bad run."""
    spec = OmegaConf.to_container(sweep, resolve=True)
    name = check_name(spec.get("name"))
    check_sweep_spec(name, spec, extra_overrides)
    base = list(spec.get("base") or [])
    variants = spec.get("variants") or {"default": {}}
    expansion, errors, seen = Expansion(name=name), [], set()
    for label, variant in variants.items():
        for axes, kind, values, from_curves in _stages(name, spec, label, variant):
            for point in _grid(axes):
                overrides = [*base, *(variant.get("overrides") or []), *point, *extra_overrides]
                try:
                    composed = compose_run_config(overrides)
                except Exception as err:  # Hydra names the bad key or value
                    errors.append((" ".join([label, *point]), describe_error(err)))
                    continue
                composed.sweep = name
                # with no variants, a run is labelled by its structure (an axis over structures gives one each)
                composed.label = label if spec.get("variants") else default_label(composed)
                point_label = " ".join([composed.label, *point])
                for value in values:
                    run_label = f"{point_label} {kind}={value:g}"
                    try:
                        if from_curves:
                            _check_curve_schedule(composed)
                        planned = _plan(composed.copy(), kind, value, overrides, run_label, cuda)
                    except (ConfigError, SweepError) as err:
                        errors.append((run_label, str(err)))
                        continue
                    planned.axes = [*point, f"{kind}={value:g}"]
                    if planned.plan.run_id not in seen:
                        seen.add(planned.plan.run_id)
                        expansion.runs.append(planned)
    if len({message for _, message in errors}) == 1:  # one bad setting shared by every bad run: one line
        raise SweepError(f"sweep {name!r}: {len(errors)} invalid run(s), nothing was submitted: {errors[0][1]}")
    if errors:
        raise SweepError(f"sweep {name!r}: {len(errors)} invalid run(s); nothing was submitted\n  "
                         + "\n  ".join(f"run [{label}]: {message}" for label, message in errors))
    attach_eval_budgets(expansion.runs, read_budgets=_curve_reads(spec.get("budgets") or {}))
    cooldown = (spec.get("budgets") or {}).get("cooldown")
    if cooldown:
        expansion.runs = [run for trunk in expansion.runs
                          for run in _with_branches(trunk, spec["budgets"]["flops"], cooldown, cuda)]
    return expansion


def _with_branches(trunk: PlannedRun, budgets: Sequence[float], decay_frac: float,
                   cuda: bool | None) -> list[PlannedRun]:
    """A from_curves run as a cooldown trunk followed by its branches: one wsd run per budget that starts from the
    trunk's snapshot at its decay's first step (the trunk keeps one at each), so each budget gets an annealed read."""
    def branch(flops: float, fork_from: str | None) -> PlannedRun:
        cfg = trunk.cfg.copy()
        cfg.train.schedule, cfg.train.decay_frac, cfg.train.fork_from = "wsd", float(decay_frac), fork_from
        cfg.train.eval_flops, cfg.train.snapshot_steps = [], []
        axes = [*trunk.axes[:-1], f"flops={flops:g}", f"cooldown={decay_frac:g}"]
        planned = _plan(cfg, "flops", float(flops), trunk.overrides, " ".join([str(cfg.label), *axes]), cuda)
        planned.axes = axes
        return planned

    steps = sorted({fork_step(branch(c, None).plan.steps, decay_frac) for c in budgets})
    trunk.cfg.train.snapshot_steps = steps
    trunk.plan = plan_run(trunk.cfg, cuda)
    return [trunk, *(branch(c, trunk.plan.run_id) for c in sorted(budgets))]


def _override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def check_sweep_spec(name: str, spec: dict[str, Any], extra_overrides: Sequence[str]) -> None:
    """Unknown sweep keys are errors, and so is an override of a key the sweep sweeps (it would collapse the
    grid: `model.width=64` on a sweep over widths trains one width under every width's label)."""
    unknown = sorted(set(spec) - set(SWEEP_KEYS))
    if unknown:
        raise SweepError(f"sweep {name!r}: unknown key(s) {unknown}; a sweep has only {', '.join(SWEEP_KEYS)}")
    check_sweep_shapes(name, spec)
    variants = spec.get("variants") or {}
    swept = {key: "axes" for key in spec.get("axes") or {}}
    swept.update({key: "budgets" for key in ("train.tokens", "train.flops")})  # every run's budget comes from there
    varied: dict[str, set[str]] = {}
    for label, variant in variants.items():
        bad = sorted(set(variant) - set(VARIANT_KEYS))
        if bad:
            raise SweepError(f"sweep {name!r}: variant {label!r} has unknown key(s) {bad}; a variant has only "
                             f"{', '.join(VARIANT_KEYS)}")
        own = {key: f"the axes of variant {label!r}" for key in variant.get("axes") or {}}
        ladder = variant.get("ladder")
        for rung in ladder if isinstance(ladder, list) else []:
            rung_axes = rung.get("axes") if isinstance(rung, dict) else None
            own.update({key: f"the ladder of variant {label!r}" for key in rung_axes or {}}
                       if isinstance(rung_axes, dict) else {})
        for override in variant.get("overrides") or []:
            key = _override_key(override)
            where = own.get(key) or swept.get(key)
            if where:  # the swept value comes after the override: the override would be lost
                fix = (f"give the variant its own axis instead, axes: {{{key}: [{override.partition('=')[2]}]}}"
                       if where == "axes" else "drop the override")
                raise SweepError(f"sweep {name!r}: variant {label!r} overrides {override}, but {key} is swept by "
                                 f"{where}, whose values replace it in every run; {fix}")
            varied.setdefault(key, set()).add(override)
        for key, where in own.items():
            swept.setdefault(key, where)
    swept.update({key: "the variants" for key, values in varied.items() if len(values) > 1 and key not in swept})
    for override in extra_overrides:
        key = _override_key(override)
        if key in swept:
            raise SweepError(f"{override}: {key} is swept by {swept[key]} of sweep {name!r}, so an override would "
                             "collapse the grid; edit the sweep's values instead (or copy it to a new sweep file)")


def _want(ok: bool, where: str, value: Any, want: str) -> None:
    if not ok:
        raise SweepError(f"{where} must be {want}, got {'null' if value is None else repr(value)}")


def _override_list(where: str, value: Any) -> None:
    _want(value is ABSENT or isinstance(value, list) and all(isinstance(v, str) for v in value), where, value,
          "a list of override strings such as [model=gpt2, model.depth=2] (a YAML list, not one string)")


def _axes(where: str, axes: Any) -> None:
    _want(axes is ABSENT or isinstance(axes, dict), where, axes, "a mapping {override key: [values]}")
    for key, values in (axes if isinstance(axes, dict) else {}).items():
        _axis_values(f"{where}.{key}", values)


def _axis_values(where: str, values: Any) -> None:
    """An axis is a non-empty list of distinct values (a repeated value would train one run under two points)."""
    _want(isinstance(values, list) and len(values) > 0, where, values, "a non-empty list of values such as [64, 128]")
    seen: set[str] = set()
    for value in map(_format, values):
        if value in seen:
            raise SweepError(f"{where} lists {value} more than once; each value of an axis is one run: list it once")
        seen.add(value)


def _budget_list(where: str, values: Any) -> None:
    _want(isinstance(values, list) and len(values) > 0 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf") for v in values),
        where, values, "a non-empty list of positive numbers such as [1.0e13, 4.0e13]")


def check_sweep_shapes(name: str, spec: dict[str, Any]) -> None:
    """Every sweep key holds the kind of value it takes (a string where a list belongs would otherwise be read
    character by character; a key given as null names no value: it is left out, or given one); each mistake names
    the key and an example."""
    where = f"sweep {name!r}:"
    _want(isinstance(spec.get("description", ""), str), f"{where} description", spec.get("description"), "a string")
    _override_list(f"{where} base", spec.get("base", ABSENT))
    _axes(f"{where} axes", spec.get("axes", ABSENT))
    budgets = spec.get("budgets", ABSENT)
    _want(budgets is ABSENT or isinstance(budgets, dict), f"{where} budgets", budgets,
          "a mapping such as {tokens: [65536, 262144]}")
    for kind in BUDGET_KINDS:
        if isinstance(budgets, dict) and budgets.get(kind) is not None:
            _budget_list(f"{where} budgets.{kind}", budgets[kind])
    variants = spec.get("variants", ABSENT)
    _want(variants is ABSENT or isinstance(variants, dict), f"{where} variants", variants,
          "a mapping {label: {overrides: [...], axes: {...}}}")
    for label, variant in (variants if isinstance(variants, dict) else {}).items():
        _want(isinstance(label, str) and bool(label.strip()), f"{where} variant label", label,
              "a name such as btt_r4 (it labels the variant's runs)")
        _want(isinstance(variant, dict), f"{where} variant {label!r}", variant,
              "a mapping {overrides: [...], axes: {...}, ladder: [...]} ({} for none of its own)")
        _override_list(f"{where} variant {label!r} overrides", variant.get("overrides", ABSENT))
        _axes(f"{where} variant {label!r} axes", variant.get("axes", ABSENT))
        _want(variant.get("ladder", ABSENT) is not None, f"{where} variant {label!r} ladder", None,
              "a non-empty list of rungs such as [{flops: 1.0e15, axes: {model.width: [128, 192]}}]")


def _plan(cfg: DictConfig, kind: str, value: float, overrides: list[str], label: str,
          cuda: bool | None) -> PlannedRun:
    """Set the run's budget (tokens, FLOPs, or tokens per effective parameter) and plan it."""
    if kind == "tokens":
        cfg.train.tokens = int(value)
        cfg.train.flops = None
    elif kind == "flops":
        cfg.train.flops = float(value)
    else:
        cfg.train.flops = None
        effective_params = plan_run(cfg, cuda).train_flops_per_unit / 6
        cfg.train.tokens = int(value * effective_params)
    OmegaConf.resolve(cfg)
    return PlannedRun(label=label, overrides=overrides, cfg=cfg, plan=plan_run(cfg, cuda))
