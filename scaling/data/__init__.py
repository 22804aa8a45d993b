"""Data for training runs: token streams (text), image sets, and a synthetic teacher (regression).

    data_info(cfg, context)           shapes/vocabulary, cheap; called before any job is submitted
    build_data(cfg, context=..., batch_size=..., seed=..., rank=0, world_size=1) -> DataBundle
        .info, .train (next_batch/state_dict/load_state_dict), .eval_batches(n_batches, batch_size)

`cfg` is the run's `data` section (scaling.config.schema.DataConfig, as a dataclass or composed DictConfig).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import OmegaConf

from scaling.data.interface import DataInfo, TrainStream
from scaling.data.images import build_images, image_info
from scaling.data.batching import DataBundle
from scaling.data.teacher import build_teacher, teacher_info
from scaling.data.text import build_text, text_info

KINDS = ("text", "image", "teacher")

__all__ = ["DataBundle", "DataInfo", "TrainStream", "build_data", "data_info"]


def _config(cfg: Any) -> Any:
    """A DataConfig dataclass becomes a DictConfig, so interpolations such as cache_dir's ${oc.env:...} resolve."""
    cfg = OmegaConf.structured(cfg) if dataclasses.is_dataclass(cfg) else cfg
    if cfg.kind not in KINDS:
        raise ValueError(f"data.kind={cfg.kind!r} is unknown: use one of {', '.join(KINDS)}")
    return cfg


def data_info(cfg: Any, context: int) -> DataInfo:
    """What the model builder needs; raises a clear error when the data is missing."""
    cfg = _config(cfg)
    if cfg.kind == "text":
        return text_info(cfg, context)
    if cfg.kind == "image":
        return image_info(cfg)
    return teacher_info(cfg)


def build_data(
    cfg: Any, *, context: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
) -> DataBundle:
    """Training stream and held-out set. batch_size is the global batch; this rank gets rows
    [rank * b, (rank + 1) * b) of it, b = batch_size // world_size. `context` is used by text only."""
    cfg = _config(cfg)
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"train.seed={seed!r} must be a non-negative integer")
    if cfg.kind == "text":
        return build_text(cfg, context=context, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size)
    if cfg.kind == "image":
        return build_images(cfg, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size)
    return build_teacher(cfg, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size)
