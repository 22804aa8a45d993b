"""Synthetic regression: a frozen random teacher network labels fresh Gaussian inputs (the reference's MLP
regression task).

Teacher: h_0 = x ~ N(0, I_input_dim); h_l = sqrt(2) * relu(W_l h_{l-1}) for l = 1..teacher_depth, W_l of width
teacher_width; y = W_out h_depth with OUTPUT_DIM outputs. Every W has N(0, 1/fan_in) entries, so with the
sqrt(2) gain E|h_l|^2 / width stays about E|x|^2 / input_dim = 1 at every depth and y has O(1) scale.
Weights come from data.teacher_seed alone; training inputs from (train.seed, batch index); the held-out set of
data.eval_examples inputs from data.teacher_seed, so every run of one task is evaluated on the same examples.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from scaling.data.interface import DataInfo
from scaling.data.batching import Batch, DataBundle, IndexedStream, RankSlice, batch_generator, check_eval_request

OUTPUT_DIM = 1


class Teacher:
    """The frozen network; plain tensors, no autograd."""

    BLOCK = 128  # rows per forward call; see `targets`

    def __init__(self, input_dim: int, width: int, depth: int, seed: int) -> None:
        g = batch_generator(seed, 0, "teacher-weights")
        dims = [input_dim] + [width] * depth + [OUTPUT_DIM]
        self.weights = [torch.randn(d_out, d_in, generator=g) / math.sqrt(d_in) for d_in, d_out in zip(dims, dims[1:])]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for w in self.weights[:-1]:
            h = math.sqrt(2.0) * torch.relu(h @ w.T)
        return h @ self.weights[-1].T

    def targets(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """teacher(x[start:stop]) for a global batch x, computed over the row blocks [k*BLOCK, (k+1)*BLOCK) of x.

        A matmul's last bits depend on how many rows it is given, so every row is always computed inside the
        same global block: a rank's slice then equals the same rows of the single-process batch bit for bit.
        """
        first, last = start // self.BLOCK, (stop - 1) // self.BLOCK
        y = torch.cat([self.forward(x[k * self.BLOCK : (k + 1) * self.BLOCK]) for k in range(first, last + 1)])
        return y[start - first * self.BLOCK : stop - first * self.BLOCK]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.targets(x, 0, len(x))


def check_teacher_config(cfg: Any) -> None:
    for field in ("input_dim", "teacher_width", "teacher_depth", "eval_examples"):
        value = getattr(cfg, field)
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"data.{field}={value!r} must be a positive integer")
    if cfg.teacher_seed < 0:
        raise ValueError(f"data.teacher_seed={cfg.teacher_seed} must be non-negative")


def teacher_info(cfg: Any) -> DataInfo:
    check_teacher_config(cfg)
    return DataInfo(kind="teacher", unit="example", input_shape=(cfg.input_dim,), output_dim=OUTPUT_DIM, loss="mse")


def build_teacher(cfg: Any, *, batch_size: int, seed: int, rank: int, world_size: int) -> DataBundle:
    info = teacher_info(cfg)
    rows = RankSlice.of(batch_size, rank, world_size)
    teacher = Teacher(cfg.input_dim, cfg.teacher_width, cfg.teacher_depth, cfg.teacher_seed)

    @functools.cache
    def held_out() -> Batch:
        """All data.eval_examples held-out inputs and their targets, computed once."""
        x = torch.randn(cfg.eval_examples, cfg.input_dim, generator=batch_generator(cfg.teacher_seed, 0, "eval"))
        return x, teacher(x)

    def make_batch(index: int) -> Batch:
        x = torch.randn(rows.global_batch, cfg.input_dim, generator=batch_generator(seed, index))
        return x[rows.start : rows.stop], teacher.targets(x, rows.start, rows.stop)

    def eval_batches(n_batches: int, eval_batch_size: int) -> list[Batch]:
        wanted = check_eval_request(n_batches, eval_batch_size, cfg.eval_examples, "data.eval_examples")
        x, y = held_out()
        pairs = zip(x[:wanted].split(eval_batch_size), y[:wanted].split(eval_batch_size))
        return [(xb.clone(), yb.clone()) for xb, yb in pairs]

    return DataBundle(info=info, train=IndexedStream(make_batch, seed), eval_batches=eval_batches)
