"""Throughput (training units per second) of a config: recorded from finished runs, or measured here.

Used by the launcher's dry run to estimate time. Configs that share everything that affects speed (family,
structure, shape, batch) share a throughput key; measurements are cached in <results_root>/throughput.json.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from scaling.config.compose import as_dataclass
from scaling.config.schema import ModelConfig, StructureConfig
from scaling.data import data_info
from scaling.launch.sweeps import PlannedRun
from scaling.mup.parametrization import build_parametrized_model, make_optimizer
from scaling.store.results import atomic_write_json, iter_run_dirs, read_json, read_summary
from scaling.store.files import RunFileError, read_config_file
from scaling.store.paths import RunPaths
from scaling.store.states import RunState


STARTUP_S = 5.0  # per-run overhead seen here: process start, imports, data and model build


def throughput_key(cfg: DictConfig) -> str:
    """Hash of what determines speed: model shape, structure, data kind, batch size (not lr, seed, budget)."""
    speed = {"model": OmegaConf.to_container(cfg.model, resolve=True),
             "structure": OmegaConf.to_container(cfg.structure, resolve=True),
             "data": [cfg.data.kind, cfg.data.name, cfg.data.tokenizer, cfg.data.vocab_size, cfg.data.flatten],
             "batch_size": cfg.train.batch_size}
    for key in ("parametrization", "base_width"):
        speed["model"].pop(key, None)
    return hashlib.sha256(json.dumps(speed, sort_keys=True).encode()).hexdigest()[:16]


def recorded_rates(results_root: str) -> dict[str, float]:
    """units/s of finished runs here, by throughput key (runs record it in summary.json)."""
    rates: dict[str, float] = {}
    for rdir in iter_run_dirs(results_root):
        try:  # a corrupt run file only costs that run's rate (scaling.status reports the file)
            summary = read_summary(rdir)
            config = read_config_file(RunPaths(rdir).config)
        except RunFileError:
            continue
        if not summary or summary["status"] != RunState.COMPLETED or not summary.get("tokens_per_s") or not config:
            continue
        rates[throughput_key(OmegaConf.create(config))] = float(summary["tokens_per_s"])
    return rates


def measure_rate(cfg: DictConfig, steps: int = 3) -> float:
    """units/s of a few real optimiser steps on random inputs of the right shape (after one warm-up step)."""

    info = data_info(cfg.data, context=cfg.model.context)
    model, rules = build_parametrized_model(as_dataclass(cfg.model, ModelConfig),
                                            as_dataclass(cfg.structure, StructureConfig), info)
    opt = make_optimizer(model, rules, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)
    b = cfg.train.batch_size
    if info.kind == "text":
        x = torch.randint(0, info.vocab_size, (b, cfg.model.context))
        y, units = x, b * cfg.model.context
    else:
        x = torch.randn(b, *info.input_shape)
        y = (torch.randint(0, info.num_classes, (b,)) if info.loss == "cross_entropy"
             else torch.randn(b, info.output_dim))
        units = b
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return units / sorted(times[1:])[len(times[1:]) // 2]


def estimate_seconds(runs: list["PlannedRun"], results_root: str, measure: bool = True) -> dict[str, float]:
    """Estimated wall seconds per run id: units / rate + start-up; measured rates are cached."""
    cache_path = Path(results_root) / "throughput.json"
    cache = read_json(cache_path) or {}
    rates = {**cache, **recorded_rates(results_root)}
    seconds = {}
    for run in runs:
        key = throughput_key(run.cfg)
        if key not in rates and measure:
            rates[key] = cache[key] = measure_rate(run.cfg)
        if key in rates:
            seconds[run.plan.run_id] = run.plan.units / rates[key] + STARTUP_S
    if measure and cache:
        atomic_write_json(cache_path, cache)
    return seconds
