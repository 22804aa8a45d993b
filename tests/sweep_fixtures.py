"""Tiny sweeps the launch, store and CLI tests share: a GPT-2 small enough to train in seconds."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from scaling.launch.sweeps import compose_launch_config

REPO = Path(__file__).resolve().parents[1]
TINY_BASE = ["model=gpt2", "model.width=32", "model.base_width=32", "model.depth=1", "model.head_dim=16",
             "model.context=32", "train.batch_size=8", "train.lr=0.01", "train.eval_points=2",
             "logger.mode=disabled"]


def tiny_sweep(**extra) -> dict:
    return {"name": "tiny", "base": TINY_BASE, "axes": {"model.width": [32, 48]},
            "variants": {"dense": {"overrides": ["structure=dense"]},
                         "btt": {"overrides": ["structure=btt"]}},
            "budgets": {"tokens": [4096]}} | extra


def launch_cfg(tmp_path: Path, sweep: dict, *overrides: str):
    cfg = compose_launch_config(["+sweep=quickstart", f"results_root={tmp_path}", *overrides])
    cfg.sweep = OmegaConf.create(sweep)
    return cfg
