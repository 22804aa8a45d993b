"""Tiny sweeps the launch, store and CLI tests share: a GPT-2 small enough to train in seconds."""

from __future__ import annotations

import functools
from pathlib import Path

from omegaconf import OmegaConf

from scaling.launch.sweeps import PlannedRun, compose_launch_config, expand

REPO = Path(__file__).resolve().parents[1]
TINY_BASE = ["model=gpt2", "model.width=32", "model.base_width=32", "model.depth=1", "model.head_dim=16",
             "model.context=32", "train.batch_size=8", "train.lr=0.01", "train.eval_points=2",
             "logger.mode=disabled"]


def tiny_sweep(**extra) -> dict:
    return {"name": "tiny", "base": TINY_BASE, "axes": {"model.width": [32, 48]},
            "variants": {"dense": {"overrides": ["structure=dense"]},
                         "btt": {"overrides": ["structure=btt"]}},
            "budgets": {"tokens": [4096]}} | extra


@functools.cache
def shipped_runs(name: str) -> tuple[PlannedRun, ...]:
    """The planned runs of the shipped sweep `name`, expanded once a session (planning every run of a large sweep
    takes tens of seconds, and several slow tests need the same ones). Shared: read them, never modify them."""
    return tuple(expand(compose_launch_config([f"+sweep={name}"]).sweep).runs)


def launch_cfg(tmp_path: Path, sweep: dict, *overrides: str):
    cfg = compose_launch_config(["+sweep=quickstart", f"results_root={tmp_path}", *overrides])
    cfg.sweep = OmegaConf.create(sweep)
    return cfg
