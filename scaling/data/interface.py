"""What every data source hands to the model builder and the training loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class DataInfo:
    """Shapes a model needs to know. `unit` is what the training budget counts: 'token' or 'example'."""

    kind: str  # text | image | teacher
    unit: str  # token | example
    vocab_size: int = 0  # text
    input_shape: tuple[int, ...] = ()  # image: (C, H, W) or (C*H*W,) when flattened; teacher: (input_dim,)
    num_classes: int = 0  # image
    output_dim: int = 0  # teacher regression
    loss: str = "cross_entropy"  # cross_entropy | mse


class TrainStream(Protocol):
    """Endless, deterministic training batches: batch i depends only on (seed, i, rank, world_size)."""

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
