"""How every data kind batches: the bundle handed to the training loop, per-batch seeding and rank slicing.

Determinism contract: global batch i is a pure function of (seed, i). Every random draw for it comes from
`batch_generator(seed, i)`; each rank draws the randomness of the whole global batch (cheap: indices, offsets,
Gaussian inputs) and materialises only its own slice, so concatenating the ranks' batches gives the
world_size=1 batch, and a resumed stream (same seed, same index) continues with exactly the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from scaling.data.interface import DataInfo, TrainStream

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class DataBundle:
    """Everything the training loop needs from a data source."""

    info: DataInfo
    train: TrainStream
    # eval_batches(n_batches, batch_size): the first n_batches*batch_size examples of a fixed held-out set,
    # identical on every call, every seed and every rank (each rank gets the full batches).
    eval_batches: Callable[[int, int], list[Batch]]


def batch_generator(seed: int, index: int, stream: str = "train") -> torch.Generator:
    """A torch generator seeded from (seed, stream, index) alone; SeedSequence mixes them without collisions."""
    key = [seed, index, *stream.encode()]
    state = np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@dataclass(frozen=True)
class RankSlice:
    """This rank's rows [start, stop) of every global batch."""

    global_batch: int
    start: int
    stop: int

    @staticmethod
    def of(batch_size: int, rank: int, world_size: int) -> "RankSlice":
        if batch_size <= 0:
            raise ValueError(f"train.batch_size must be positive, got {batch_size}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if batch_size % world_size:
            raise ValueError(
                f"train.batch_size={batch_size} is not divisible by world_size={world_size}: "
                f"set train.batch_size to a multiple of {world_size}"
            )
        local = batch_size // world_size
        return RankSlice(batch_size, rank * local, (rank + 1) * local)


class IndexedStream:
    """Endless training batches: `make_batch(i)` builds this rank's slice of global batch i.

    The stream's only state is the index of the next batch (plus the seed, checked on resume).
    """

    def __init__(self, make_batch: Callable[[int], Batch], seed: int) -> None:
        self._make_batch = make_batch
        self._seed = seed
        self._index = 0

    def next_batch(self) -> Batch:
        batch = self._make_batch(self._index)
        self._index += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"next_index": self._index, "seed": self._seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed") != self._seed:
            raise ValueError(
                f"data state was saved with seed {state.get('seed')} but this stream has seed {self._seed}: "
                "resume with the same train.seed"
            )
        index = state.get("next_index")
        if not isinstance(index, int) or index < 0:
            raise ValueError(f"data state has an invalid next_index {index!r}")
        self._index = index


def check_eval_request(n_batches: int, batch_size: int, available: int, grow_field: str | None = None) -> int:
    """Number of held-out examples wanted; a clear error when the held-out set is too small."""
    if n_batches <= 0 or batch_size <= 0:
        raise ValueError(f"eval needs positive n_batches and batch_size, got {n_batches} x {batch_size}")
    wanted = n_batches * batch_size
    if wanted > available:
        grow = f", or raise {grow_field}" if grow_field else ""
        raise ValueError(
            f"eval wants {n_batches} x {batch_size} = {wanted} held-out examples but only {available} exist: "
            f"lower train.eval_batches (or the eval batch size){grow}"
        )
    return wanted
