"""Compose run configs from `conf/` with Hydra, validated against the schema in scaling.config.schema."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from scaling.config.schema import RunConfig
from scaling.config.validate import SettingError, check_bool_overrides, integral_overrides

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]


def resource_dir(package: str, checkout_dir: str) -> Path:
    """A data folder shipped inside the installed package (`scaling.conf` <- conf/, see setup.py), else the
    checkout's top-level folder (running from a source tree that was never installed)."""
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return REPO_ROOT / checkout_dir


CONF_DIR = resource_dir("scaling.conf", "conf")
SWEEPS_DIR = resource_dir("scaling.sweep_files", "sweeps")
SWEEP_FILE_SUFFIXES = (".yaml", ".yml")
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")
SEARCHPATH = "hydra.searchpath"
MAX_SWEEP_NODES = 10_000  # YAML nodes of a sweep file, aliases expanded: 50x the largest shipped sweep's


class SweepPathError(ValueError):
    """A sweep folder or file given on the command line that does not exist or cannot be read."""


class ConfigDirError(SettingError):
    """A config folder given with --config-dir or hydra.searchpath that does not exist or is not a list of folders."""


def with_config_dirs(args: Sequence[str]) -> list[str]:
    """`args` with Hydra's `--config-dir DIR` (`-cd DIR`, `--config-dir=DIR`) and any `hydra.searchpath=[...]` made
    into one `hydra.searchpath=['file:///abs/DIR', ...]` override, each folder absolute and checked to exist. Every
    compose of a command then finds DIR/model/NAME.yaml, DIR/structure/NAME.yaml, ... (after conf/'s own, as Hydra
    orders them), each run of a sweep too (split_run_overrides gives it to the runs), and DIR/sweep/NAME.yaml is a
    sweep (sweep_dir_args)."""
    entries, rest, given = [], [], False
    args = iter(args)
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag in CONFIG_DIR_FLAGS:
            value = value if eq else next(args, "")
            if not value or value.startswith("-"):
                raise ConfigDirError(f"{flag} needs a folder: {flag} DIR (a folder of model/, structure/, sweep/ "
                                     "config files)")
            entries.append(("--config-dir", value))
        elif flag.lstrip("+") == SEARCHPATH:
            given = True
            entries += [(SEARCHPATH, v) for v in _searchpath_value(arg)]
        else:
            rest.append(arg)
    if not entries:
        return ([f"{SEARCHPATH}=[]"] if given else []) + rest
    paths = [_checked_entry(source, value) for source, value in entries]
    quoted = ",".join("'" + p.replace("'", "\\'") + "'" for p in paths)
    return [f"{SEARCHPATH}=[{quoted}]", *rest]


def _searchpath_value(arg: str) -> list[str]:
    """The folders of a `hydra.searchpath=[...]` override."""
    value = OverridesParser.create().parse_override(arg.lstrip("+")).value()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigDirError(f"{arg}: {SEARCHPATH} takes a list of folders, e.g. {SEARCHPATH}=[file:///path/to/conf]")
    return value


def _checked_entry(source: str, value: str) -> str:
    """A search path entry with its folder made absolute (`file://` is the default scheme), or ConfigDirError."""
    scheme, sep, rest = value.partition("://")
    if sep and scheme != "file":
        return value  # pkg://module: Hydra checks it
    folder = Path(rest if sep else value).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigDirError(f"{source} {folder}: no such folder; give a folder that holds your config groups "
                             "(model/NAME.yaml, structure/NAME.yaml, sweep/NAME.yaml)")
    return f"file://{folder}"


def config_dirs(args: Sequence[str]) -> list[Path]:
    """The folders of the `hydra.searchpath` override in `args` (as with_config_dirs writes it)."""
    folders = []
    for arg in args:
        if arg.partition("=")[0].lstrip("+") == SEARCHPATH:
            for entry in _searchpath_value(arg):
                scheme, sep, rest = entry.partition("://")
                if not sep or scheme == "file":
                    folders.append(Path(rest if sep else entry))
    return folders


def sweep_dir_args(args: Sequence[str]) -> list[str]:
    """The extra folders `+sweep=NAME` looks in: each config folder's `sweep/` (first: Hydra reads a sweep there
    itself), then `sweep_dir=PATH`s."""
    in_config_dirs = [str(d / "sweep") for d in config_dirs(args) if (d / "sweep").is_dir()]
    return [*in_config_dirs, *(a.split("=", 1)[1] for a in args if a.startswith("sweep_dir="))]


# Settings that are alternatives to each other: the one the overrides set last wins, and the other is cleared
# (structure=low_rank's preset sets rank_frac, so `structure=low_rank structure.rank=4` means rank 4).
ALTERNATIVES = (("structure.rank", "structure.rank_frac"),)


def sweep_dirs(extra: Sequence[str] = ()) -> list[Path]:
    """Where `+sweep=NAME` looks, first match wins: `sweep_dir=PATH` folders, `$SCALING_SWEEPS` folders
    (os.pathsep-separated), then the sweeps shipped with the package."""
    dirs = [*extra, *filter(None, os.environ.get("SCALING_SWEEPS", "").split(os.pathsep))]
    for d in dirs:
        if not Path(d).is_dir():
            raise SweepPathError(f"sweep folder {d!r} (sweep_dir= or $SCALING_SWEEPS) does not exist; "
                                 "give a folder of sweep YAML files")
    return [*(Path(d).resolve() for d in dirs), SWEEPS_DIR]


def sweep_files(extra_dirs: Sequence[str] = ()) -> dict[str, Path]:
    """Sweep name (file stem) -> file, over `sweep_dirs`; an earlier folder shadows a later one."""
    found: dict[str, Path] = {}
    for folder in reversed(sweep_dirs(extra_dirs)):
        found |= {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in SWEEP_FILE_SUFFIXES}
    return dict(sorted(found.items()))


def is_sweep_path(value: str) -> bool:
    """`+sweep=path/to/file.yaml` names a file rather than a sweep."""
    return value.endswith(SWEEP_FILE_SUFFIXES)


def read_sweep_yaml(path: Path) -> Any:
    """The parsed YAML of a sweep file; a file that is not text, not YAML, repeats a key or whose aliases expand it
    beyond MAX_SWEEP_NODES raises SweepPathError with the reason in one line."""
    try:
        _check_expanded_size(path, yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader))
        return OmegaConf.to_container(OmegaConf.load(path))
    except UnicodeDecodeError:
        raise SweepPathError(f"{path}: not a text file (it is not UTF-8); give a sweep YAML file") from None
    except RecursionError:
        raise SweepPathError(f"{path}: nested too deeply to be read; a sweep is a few levels of mappings and lists "
                             "(see sweeps/quickstart.yaml): fix the file's YAML") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).split("\n")[0]
        if "\t" in problem or "'\\t'" in problem:
            problem += " (YAML indents with spaces, not tabs)"
        raise SweepPathError(f"{path}: cannot be read{where}: {' '.join(problem.split())}; fix the file's YAML") \
            from None
    except OSError as err:
        raise SweepPathError(f"{path}: cannot be read ({err.strerror}); give a readable sweep YAML file") from None
    except OmegaConfBaseException as err:  # e.g. a key that is not a string
        reason = " ".join(str(err).split("\n")[0].split())
        raise SweepPathError(f"{path}: cannot be read ({reason}); fix the file's YAML") from None


def _check_expanded_size(path: Path, node: yaml.Node | None) -> None:
    """A sweep file's YAML, each alias (*name) copied out as the loader copies it, holds at most MAX_SWEEP_NODES
    nodes, and no alias sits inside the node it names ("billion laughs" files would take minutes to load)."""
    sizes: dict[int, float] = {}

    def size(node: yaml.Node) -> float:
        if id(node) not in sizes:
            sizes[id(node)] = math.inf  # while counting it: an alias back to it never ends
            children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else \
                node.value if isinstance(node, yaml.SequenceNode) else []
            sizes[id(node)] = 1 + sum(size(child) for child in children)
        return sizes[id(node)]

    total = size(node) if node is not None else 0
    if total == math.inf:
        raise SweepPathError(f"{path}: a YAML alias (*name) lies inside the node its anchor (&name) marks, so the "
                             "file never ends; fix the file's YAML")
    if total > MAX_SWEEP_NODES:
        raise SweepPathError(f"{path}: its YAML aliases (*name) expand it to {int(total):,} values, more than the "
                             f"{MAX_SWEEP_NODES:,} a sweep file may hold; repeat fewer aliases (or split the sweep)")


def load_sweep_file(path: str | Path) -> dict[str, Any]:
    """A sweep YAML file as a dict; a missing `name` defaults to the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise SweepPathError(f"+sweep={path}: no such sweep file; give a path to a sweep YAML file or a sweep name")
    spec = read_sweep_yaml(path)
    if not isinstance(spec, Mapping):
        raise SweepPathError(f"+sweep={path}: the file holds no mapping; see sweeps/quickstart.yaml for the format")
    if not spec:
        raise SweepPathError(f"+sweep={path}: the file is empty; see sweeps/quickstart.yaml for the format")
    if "defaults" in spec:  # Hydra would read it as the file's defaults list
        raise SweepPathError(f"+sweep={path}: defaults is not a key of a sweep (Hydra reads it as a defaults "
                             "list); rename it, or use YAML anchors under another key")
    return {"name": path.stem, **spec}


def register_schemas() -> None:
    """Make `run_schema` (the typed RunConfig) available to conf/run.yaml's defaults list."""
    ConfigStore.instance().store(name="run_schema", node=RunConfig)


def run_overrides(args: Sequence[str]) -> list[str]:
    """The overrides a run command composes conf/run.yaml with (registers the schema it needs)."""
    register_schemas()
    return list(args)


def compose_conf(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose conf/<config_name>.yaml with Hydra overrides (schemas must be registered first)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))


def check_one_option(overrides: Sequence[str]) -> None:
    """A config group takes one option: Hydra reads `structure=[btt,dense]` as every option merged in turn (the
    later's settings over the earlier's), which is never one run's config."""
    for override in overrides:
        key, _, value = override.partition("=")
        group = key.lstrip("+~")
        if not (group.isidentifier() and value.strip().startswith("[")):
            continue
        folders = [d / group for d in (CONF_DIR, *config_dirs(overrides)) if (d / group).is_dir()]
        options = sorted({p.stem for folder in folders for p in folder.glob("*.yaml")})
        if options:
            raise SettingError(f"{group}={value}: {group} takes one name, not a list; choose one of: "
                               f"{', '.join(options)}")


def compose_run_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose conf/run.yaml with Hydra overrides, e.g. ["model=vit", "model.width=128"]."""

    register_schemas()
    check_bool_overrides(list(overrides))
    check_one_option(overrides)
    cfg = compose_conf("run", integral_overrides(list(overrides)))
    OmegaConf.set_struct(cfg, True)
    _later_wins(cfg, overrides)
    return cfg


def with_new_defaults(cfg: DictConfig) -> DictConfig:
    """`cfg` with every setting the schema added since it was written filled in at its default (a config from
    an older version: a queued or requeued job's, or a run directory's), so new code trains and resumes it as
    the run it was. Settings it has are kept as they are."""
    for section, schema in typing.get_type_hints(RunConfig).items():
        node = cfg.get(section)
        if not dataclasses.is_dataclass(schema) or not isinstance(node, DictConfig):
            continue
        for field in dataclasses.fields(schema):
            if field.name not in node:
                default = field.default_factory() if field.default_factory is not dataclasses.MISSING \
                    else field.default
                if default is not dataclasses.MISSING:
                    node[field.name] = default
    return cfg


def _later_wins(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Of each pair of ALTERNATIVES the overrides set, keep the one set last and clear the other."""
    keys = [o.lstrip("+~").partition("=")[0] for o in overrides]
    for pair in ALTERNATIVES:
        given = [k for k in keys if k in pair]
        if given:
            section, name = pair[1 - pair.index(given[-1])].split(".")
            cfg[section][name] = None


def as_dataclass(node: DictConfig, schema: type[T]) -> T:
    """A composed config section as its schema dataclass (it was validated against the schema when composed)."""
    return schema(**OmegaConf.to_container(node, resolve=True))


def register_sweep(spec: Mapping[str, Any], option: str) -> str:
    """Store one sweep as option `option` of the ConfigStore group `sweep`; return `+sweep=<option>`."""
    ConfigStore.instance().store(group="sweep", name=option, node=OmegaConf.create(dict(spec)))
    return f"+sweep={option}"


def register_sweep_group(args: Sequence[str]) -> list[str]:
    """Register every sweep file of `sweep_dirs` in the group `sweep` (but those of a config folder's sweep/, which
    Hydra reads itself: registered too, Hydra would warn) and return `args` with `sweep_dir=PATH` consumed and
    `+sweep=path/to/file.yaml` turned into `+sweep=<its stem>` (that file registered)."""
    files = sweep_files(sweep_dir_args(args))
    hydra_reads = {(d / "sweep").resolve() for d in config_dirs(args)}
    for name, path in files.items():
        if path.parent in hydra_reads:
            ConfigStore.instance().repo.get("sweep", {}).pop(f"{name}.yaml", None)  # registered by an earlier call
            continue
        try:
            register_sweep(read_sweep_yaml(path), name)
        except Exception:  # a file that does not parse fails only its own sweep (launch.sweeps.check_sweep_file)
            continue
    rest = []
    for arg in args:
        if arg.startswith("sweep_dir="):
            continue
        key, _, value = arg.partition("=")
        if key.lstrip("+") == "sweep" and is_sweep_path(value):
            stem, found = Path(value).stem, files.get(Path(value).stem)
            if found is not None and found.parent in hydra_reads:
                if found != Path(value).resolve():
                    raise SweepPathError(f"+sweep={value}: the config folder's {found} has the same name, and Hydra "
                                         "reads that one; rename one of the two files")
                arg = f"+sweep={stem}"
            else:
                arg = register_sweep(load_sweep_file(value), stem)
        rest.append(arg)
    return rest
