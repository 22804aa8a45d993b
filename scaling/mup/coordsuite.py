"""The coordinate-check suite: every registered structure x {structure_aware, naive}, one command, one report.

    python -m scaling.coordsuite                          # conf/coord_checks.yaml -> docs/results/coord_checks/
    python -m scaling.coordsuite widths=[16,32,64] seeds=2 only=[dense,btt] out=/tmp/cc   # any field as KEY=VALUE

Each entry of the suite file runs scaling.coordcheck's check (a few Adam steps on one fixed batch, per width and
seed) under each parametrization. Per run (entry, parametrization, width, seed), delta-h is the geometric mean
over the hidden layers (`roles`) of the rms change of the layer's output after the last step. The suite fails
before running anything if a registered structure is neither checked nor skipped with a reason (when it runs every
entry: `only=` runs a subset), or if an entry cannot be built at one of the widths. scaling.mup.coordreport turns the
per-run table into report.md and the plots.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from scaling.config.compose import CONF_DIR, as_dataclass, compose_run_config
from scaling.mup.coordcheck import CoordCheckConfig, run_coordcheck
from scaling.data import data_info
from scaling.data.image_files import FASHION_MNIST_DEFAULT
from scaling.models import build_model
from scaling.mup.parametrization import MODES
from scaling.config.schema import ModelConfig, StructureConfig
from scaling.structures import REGISTRY

SUITE_FILE = CONF_DIR / "coord_checks.yaml"
NAIVE_EXPECTATIONS = ("falls", "flat_lower", "same")
SOURCES = ("paper", "rule")
logger = logging.getLogger(__name__)


@dataclass
class Entry:
    """One check: run overrides that pick the structure, and what naive scaling should do to delta-h."""

    overrides: list[str]
    naive: str  # falls | flat_lower | same (see conf/coord_checks.yaml)
    source: str  # paper: CBS Fig. 2a states it; rule: follows from the factors' fan-ins


@dataclass
class Suite:
    """The suite file (conf/coord_checks.yaml), validated; every field can be overridden as KEY=VALUE."""

    description: str
    run: list[str]
    data: list[str]
    fallback_data: list[str]
    widths: list[int]
    steps: int
    seeds: int
    batch_size: int
    roles: list[str]
    parametrizations: list[str]
    structures: dict[str, Entry]
    skip: dict[str, str] = field(default_factory=dict)
    only: list[str] = field(default_factory=list)  # run just these entries (all when empty)
    out: str = "docs/results/coord_checks"

    def __post_init__(self) -> None:
        try:
            self.check_config()
        except ValueError as err:  # the same fields, named here without coordcheck's prefix
            raise ValueError(str(err).replace("coordcheck.", "")) from None
        bad_modes = sorted(set(self.parametrizations) - set(MODES))
        if bad_modes or not self.parametrizations:
            raise ValueError(f"parametrizations={self.parametrizations}: choose from {list(MODES)}")
        for name, entry in self.structures.items():
            if entry.naive not in NAIVE_EXPECTATIONS or entry.source not in SOURCES:
                raise ValueError(
                    f"structures.{name}: naive={entry.naive!r} must be one of {list(NAIVE_EXPECTATIONS)} and "
                    f"source={entry.source!r} one of {list(SOURCES)}"
                )
        unknown = sorted(set(self.only) - set(self.structures))
        if unknown:
            raise ValueError(f"only={unknown} names no entry of structures; choose from {sorted(self.structures)}")
        if not self.roles:
            raise ValueError("roles=[] is empty; name the hidden roles delta-h is measured on, e.g. [ffn_up,ffn_down]")

    def check_config(self) -> CoordCheckConfig:
        """The settings of each single check (scaling.coordcheck validates them)."""
        return CoordCheckConfig(widths=self.widths, steps=self.steps, seeds=self.seeds, batch_size=self.batch_size)

    def entries(self) -> dict[str, Entry]:
        return {name: e for name, e in self.structures.items() if not self.only or name in self.only}


def load_suite(argv: Sequence[str], path: Path = SUITE_FILE) -> Suite:
    """The suite file with KEY=VALUE overrides from argv (`file=PATH` reads another suite file)."""
    files = [a.split("=", 1)[1] for a in argv if a.startswith("file=")]
    path = Path(files[-1]) if files else path
    overrides = [a for a in argv if not a.startswith("file=")]
    if not path.is_file():
        raise FileNotFoundError(f"no suite file {path}; pass file=PATH to a suite YAML like {SUITE_FILE}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Suite), OmegaConf.load(path), OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as err:  # unknown key, wrong type, missing field
        fields = ",".join(f.name for f in dataclasses.fields(Suite))
        reason = str(err).splitlines()[0]
        raise ValueError(f"bad suite option in {path} or {overrides}: {reason}; the fields are {{{fields}}}") from None
    return OmegaConf.to_object(merged)


def data_overrides(suite: Suite) -> tuple[list[str], str]:
    """Fashion-MNIST when its files are installed, else the fallback (the teacher task); with a line saying which."""
    if FASHION_MNIST_DEFAULT.is_dir() and any(FASHION_MNIST_DEFAULT.iterdir()):
        return suite.data, f"Fashion-MNIST ({FASHION_MNIST_DEFAULT})"
    return suite.fallback_data, f"the fallback {suite.fallback_data}: Fashion-MNIST is not installed at " \
                                f"{FASHION_MNIST_DEFAULT} (`make system-deps` installs it)"


def check_coverage(suite: Suite, configs: dict[str, DictConfig]) -> None:
    """Every registered structure is checked by some entry or skipped with a reason; nothing unknown is skipped."""
    checked = {cfg.structure.name for cfg in configs.values()}
    missing = sorted(set(REGISTRY) - checked - set(suite.skip))
    if missing:
        raise ValueError(
            f"registered structures {missing} are neither checked nor skipped; add an entry under structures: in "
            f"{SUITE_FILE.name} or a reason under skip: (e.g. skip={{{missing[0]}: 'why'}})"
        )
    unknown = sorted(set(suite.skip) - set(REGISTRY))
    if unknown:
        raise ValueError(f"skip names {unknown}, which are not registered structures; choose from {sorted(REGISTRY)}")


def compose_entries(suite: Suite, data: list[str]) -> dict[tuple[str, str], DictConfig]:
    """The run config of every (entry, parametrization), each checked to build at every width (on meta)."""
    configs = {}
    for name, entry in suite.entries().items():
        for mode in suite.parametrizations:
            cfg = compose_run_config([*suite.run, *data, *entry.overrides, f"model.parametrization={mode}"])
            configs[name, mode] = cfg
        _check_widths(name, configs[name, suite.parametrizations[0]], suite.widths)
    return configs


def _check_widths(name: str, cfg: DictConfig, widths: list[int]) -> None:
    model_cfg, structure_cfg = as_dataclass(cfg.model, ModelConfig), as_dataclass(cfg.structure, StructureConfig)
    info = data_info(cfg.data, context=model_cfg.context)
    for width in [*widths, model_cfg.base_width]:
        try:
            with torch.device("meta"):
                build_model(dataclasses.replace(model_cfg, width=width), structure_cfg, info)
        except ValueError as err:  # StructureError, ModelConfigError
            raise ValueError(f"structures.{name} cannot be built at width {width}: {err}; change widths or "
                             f"the entry's overrides") from err


def per_run(df: pd.DataFrame, roles: list[str]) -> pd.DataFrame:
    """One row per (width, seed): delta-h (geometric mean over `roles` at the last step) and its parts."""
    last = df[df["step"] == df["step"].max()]
    hidden = last[last["role"].isin(roles)]
    if hidden.empty:
        raise ValueError(f"roles={roles} match no layer; the layers' roles are {sorted(df['role'].unique())}")
    geo = lambda s: float(np.exp(np.log(s).mean()))  # noqa: E731
    keys = ["width", "seed"]
    out = hidden.groupby(keys)["delta_rms"].agg(geo).rename("delta_h").to_frame()
    for role in roles:
        out[f"delta_{role}"] = hidden[hidden["role"] == role].groupby(keys)["delta_rms"].agg(geo)
    for role in ("input", "head"):
        out[f"delta_{role}"] = last[last["role"] == role].groupby(keys)["delta_rms"].mean()
    out["layer_structure"] = hidden.groupby(keys)["structure"].first()
    return out.reset_index()


def run_suite(suite: Suite) -> tuple[pd.DataFrame, dict[str, str]]:
    """Run every check; the per-run table and facts for the report (data used, wall time, versions)."""
    data, data_line = data_overrides(suite)
    configs = compose_entries(suite, data)
    if not suite.only:
        check_coverage(suite, {f"{n}/{m}": c for (n, m), c in configs.items()})
    cc = suite.check_config()
    tables, start = [], time.perf_counter()
    for (name, mode), cfg in configs.items():
        t0 = time.perf_counter()
        runs = per_run(run_coordcheck(cc, cfg), suite.roles)
        runs.insert(0, "parametrization", mode)
        runs.insert(0, "structure", cfg.structure.name)
        runs.insert(0, "entry", name)
        tables.append(runs)
        logger.info(f"[coordsuite] {name:>18} {mode:<15} {time.perf_counter() - t0:5.1f}s")
    facts = {"data": data_line, "wall_s": f"{time.perf_counter() - start:.0f}", "torch": torch.__version__,
             "threads": str(torch.get_num_threads()), "machine": platform.machine(),
             "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    return pd.concat(tables, ignore_index=True), facts
