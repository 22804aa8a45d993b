"""What a run will do, computed without training: validation, size, FLOPs and step budget.

`plan_run` builds the model on the meta device (no memory, milliseconds), so a launcher can validate and
cost hundreds of runs before submitting any; every problem becomes a ConfigError naming the field and fix.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch
from omegaconf import DictConfig

from scaling.config.schema import ModelConfig, StructureConfig, resolve_device
from scaling.config.compose import as_dataclass
from scaling.data import data_info
from scaling.data.interface import DataInfo
from scaling.models.flops import model_flops, training_flops
from scaling.models import FAMILIES, build_model, check_data_kind
from scaling.store.results import run_id
from scaling.train.schedule import warmup_steps
from scaling.structures import StructureError, check_settings
from scaling.config.validate import SettingError, check_run_config


MAX_UNITS = 10**15  # the ceiling of train.tokens (scaling.config.validate), for budgets given in FLOPs


class ConfigError(ValueError):
    """An invalid run config; the message names the field and the fix."""


def check_run_config_values(cfg: DictConfig) -> None:
    """Unknown keys, the generic ranges (scaling.config.validate), the model family and the structure's declared
    settings."""
    try:
        check_run_config(cfg)
        check_settings(as_dataclass(cfg.structure, StructureConfig))
    except (SettingError, StructureError) as err:
        raise ConfigError(str(err)) from None
    if cfg.model.family not in FAMILIES:
        raise ConfigError(f"model.family={cfg.model.family!r} is not known; choose one of {tuple(FAMILIES)}")


@dataclass(frozen=True)
class RunPlan:
    run_id: str
    family: str
    structure: str
    width: int
    unit: str  # token | example
    params: int
    params_nonembed: int
    forward_flops_per_unit: float
    units_per_step: int  # tokens (text) or examples per optimiser step, global batch
    steps: int
    warmup_steps: int  # optimiser steps of the warmup (train.warmup_tokens), whatever the run's length
    units: int  # steps * units_per_step: what the run will actually train on
    train_flops: float  # training_flops(forward FLOPs per unit) * units

    @property
    def train_flops_per_unit(self) -> float:
        return training_flops(self.forward_flops_per_unit)

    def as_dict(self) -> dict:
        return asdict(self) | {"train_flops_per_unit": self.train_flops_per_unit}


def build_meta_model(cfg: DictConfig, info: DataInfo):
    model_cfg = as_dataclass(cfg.model, ModelConfig)
    structure_cfg = as_dataclass(cfg.structure, StructureConfig)
    with torch.device("meta"):
        return build_model(model_cfg, structure_cfg, info)


def resolve_runtime(cfg: DictConfig, cuda: bool | None = None) -> None:
    """Replace train.device and train.precision `auto` by what the run will use, in place, before its id is taken.

    `cuda`: whether the machine the run trains on has a CUDA device (a launcher knows its cluster's; None asks
    this process). auto device -> cuda or cpu; auto precision -> bf16 on CUDA, fp32 on CPU."""
    t = cfg.train
    t.device, t.precision = resolve_device(t.device, t.precision, torch.cuda.is_available() if cuda is None else cuda)


def check_device(device: str, cuda: bool | None) -> None:
    """A CUDA device the run's machine does not have is refused before the run starts (`cuda`: whether the
    launcher's cluster gives the run a GPU; None: the run trains on this machine)."""
    if not str(device).startswith("cuda"):
        return
    if cuda is False:
        raise ConfigError(f"train.device={device}: the cluster gives the jobs no GPU (cluster.gpus_per_node=0); set "
                          "cluster.gpus_per_node=1 or train.device=auto")
    if cuda is None:
        count = torch.cuda.device_count()
        index = int(str(device).partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(f"train.device={device}: this machine has {count} CUDA device(s); use train.device=auto "
                              "or cpu" + (f", or cuda:0 to cuda:{count - 1}" if count else ""))


def check_memory(cfg: DictConfig, params: int) -> None:
    """A run on this machine's CPU whose weights, gradients and Adam moments (16 bytes a parameter in fp32) exceed
    its memory is refused before it is built."""
    need = 16 * params
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise ConfigError(f"model.width={cfg.model.width} model.depth={cfg.model.depth} gives {params:.3g} parameters, "
                          f"whose training state ({need / 2**30:.3g} GiB: weights, gradients, Adam moments) exceeds "
                          f"this machine's {have / 2**30:.3g} GiB of memory; lower model.width or model.depth")


def run_data(cfg: DictConfig) -> DataInfo:
    """The run's data, its kind checked against the model first; a data error (a missing file, a cache folder that
    cannot be written) is a ConfigError."""
    try:
        check_data_kind(cfg.model.family, cfg.data.kind)  # before data_info, which may download or tokenize
        return data_info(cfg.data, context=cfg.model.context)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err)) from err


def plan_run(cfg: DictConfig, cuda: bool | None = None) -> RunPlan:
    """Validate a run config and compute its size and budget; raise ConfigError if it cannot run.

    The config's `auto` device and precision are resolved in place first (resolve_runtime, with `cuda`), so the
    run id and every later reader see the values the run computes with."""
    check_run_config_values(cfg)
    resolve_runtime(cfg, cuda)
    check_device(cfg.train.device, cuda)
    m, t = cfg.model, cfg.train
    info = run_data(cfg)
    try:
        model = build_meta_model(cfg, info)
    except ValueError as err:  # StructureError, ModelConfigError
        raise ConfigError(str(err)) from err
    report = model_flops(model, info, context=m.context)
    units_per_step = t.batch_size * (m.context if info.unit == "token" else 1)
    train_flops_per_unit = report.train_flops_per_unit
    target_units = t.tokens if t.flops is None else t.flops / train_flops_per_unit
    steps = math.ceil(target_units / units_per_step)
    if steps < 1 or target_units < units_per_step:
        budget = "train.tokens" if t.flops is None else "train.flops"
        raise ConfigError(
            f"{budget} gives {target_units:.3g} {info.unit}s, less than one step of "
            f"{units_per_step} {info.unit}s (train.batch_size={t.batch_size}); raise the budget or lower the batch"
        )
    if target_units > MAX_UNITS:
        raise ConfigError(f"train.flops={t.flops:g} gives {target_units:.3g} {info.unit}s, more than {MAX_UNITS:.0e} "
                          "(the ceiling of train.tokens); lower train.flops")
    if cuda is None and str(t.device) == "cpu":
        check_memory(cfg, report.params)
    units = steps * units_per_step
    return RunPlan(
        run_id=run_id(cfg), family=m.family, structure=cfg.structure.name, width=m.width, unit=info.unit,
        params=report.params, params_nonembed=report.params_nonembed,
        forward_flops_per_unit=report.forward_flops_per_unit, units_per_step=units_per_step, steps=steps,
        warmup_steps=warmup_steps(t.warmup_tokens, units_per_step), units=units,
        train_flops=train_flops_per_unit * units,
    )
