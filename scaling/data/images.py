"""Image classification data: epoch-shuffled training batches with on-the-fly augmentation, normalised per channel.

Training order: global example position p = i * B + j of batch i belongs to epoch e = p // N and is example
perm_e[p % N], where perm_e is a permutation drawn from (seed, e): every example once per epoch, and batch i is
still a function of (seed, i) alone. Augmentation (the reference recipes' random crop with zero padding, then a
horizontal flip with probability 1/2) draws from the batch's own generator, so it is deterministic too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from scaling.data.interface import DataInfo
from scaling.data.image_files import dataset_files, image_spec, load_image_set
from scaling.data.batching import Batch, DataBundle, IndexedStream, RankSlice, batch_generator, check_eval_request

CROP_PADDING = 4  # pixels of zero padding before the random crop back to H x W (RandomCrop(32, padding=4))


def image_info(cfg: Any) -> DataInfo:
    """Shapes from the dataset's spec; only checks that the files exist (nothing is loaded)."""
    spec = image_spec(cfg.name)
    dataset_files(cfg)
    c, h, w = spec.shape
    shape = (c * h * w,) if cfg.flatten else spec.shape
    return DataInfo(kind="image", unit="example", input_shape=shape, num_classes=spec.num_classes, loss="cross_entropy")


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std (pixel units, shaped (1, C, 1, 1)) of uint8 images (N, C, H, W),
    from 256-bin histograms: mean = sum_v v n_v / N, var = sum_v (v - mean)^2 n_v / N."""
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = np.bincount(images[:, c].ravel(), minlength=256).astype(np.float64)
        mean = (counts * values).sum() / counts.sum()
        var = (counts * (values - mean) ** 2).sum() / counts.sum()
        means.append(mean)
        stds.append(max(np.sqrt(var), 1e-6))
    shape = (1, -1, 1, 1)
    return np.array(means, dtype=np.float32).reshape(shape), np.array(stds, dtype=np.float32).reshape(shape)


def random_crop_flip(images: np.ndarray, dy: np.ndarray, dx: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Crop each zero-padded image (B, C, H, W) at offset (dy_b, dx_b) in [0, 2P], then mirror it where flip_b:
    out[b, :, i, j] = padded[b, :, dy_b + i, dx_b + j], reversed along j where flip_b.

    numpy (single-threaded, vectorised) rather than torch: on a busy 2-core machine torch's threaded uint8
    indexing was 2-20x slower here.
    """
    b, _, h, w = images.shape
    p = CROP_PADDING
    padded = np.pad(images, ((0, 0), (0, 0), (p, p), (p, p)))
    crops = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))  # (B, C, 2P+1, 2P+1, H, W)
    out = crops[np.arange(b), :, dy, dx]  # (B, C, H, W), a copy
    out[flip] = out[flip][..., ::-1]
    return out


class EpochOrder:
    """perm_e for each epoch e, drawn from (seed, e); keeps the current and previous epoch (a batch no larger
    than the dataset spans at most two), recomputing any other on demand."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._cache: dict[int, torch.Tensor] = {}

    def examples(self, positions: torch.Tensor) -> torch.Tensor:
        epochs = positions // self.n
        out = torch.empty_like(positions)
        for e in epochs.unique().tolist():
            if e not in self._cache:
                self._cache = {k: v for k, v in self._cache.items() if k == e - 1}
                self._cache[e] = torch.randperm(self.n, generator=batch_generator(self.seed, e, "epoch"))
            mask = epochs == e
            out[mask] = self._cache[e][positions[mask] % self.n]
        return out


def build_images(cfg: Any, *, batch_size: int, seed: int, rank: int, world_size: int) -> DataBundle:
    info = image_info(cfg)
    rows = RankSlice.of(batch_size, rank, world_size)
    train, test = load_image_set(cfg)
    if len(train.labels) == 0 or len(test.labels) == 0:
        raise ValueError(f"data.name={cfg.name}: the train or test split under data.path is empty")
    mean, std = channel_stats(train.images)
    order = EpochOrder(len(train.labels), seed)

    def present(images: np.ndarray, labels: np.ndarray) -> Batch:
        x = torch.from_numpy((images.astype(np.float32) - mean) / std)  # normalised per channel
        return (x.flatten(1) if cfg.flatten else x), torch.from_numpy(labels.copy())

    def make_batch(index: int) -> Batch:
        g = batch_generator(seed, index)
        positions = index * rows.global_batch + torch.arange(rows.start, rows.stop)
        examples = order.examples(positions).numpy()
        images = train.images[examples]
        if cfg.augment:
            span = 2 * CROP_PADDING + 1
            dy = torch.randint(span, (rows.global_batch,), generator=g)[rows.start : rows.stop].numpy()
            dx = torch.randint(span, (rows.global_batch,), generator=g)[rows.start : rows.stop].numpy()
            flip = (torch.rand(rows.global_batch, generator=g) < 0.5)[rows.start : rows.stop].numpy()
            images = random_crop_flip(images, dy, dx, flip)
        return present(images, train.labels[examples])

    def eval_batches(n_batches: int, eval_batch_size: int) -> list[Batch]:
        check_eval_request(n_batches, eval_batch_size, len(test.labels))
        chunks = [slice(i * eval_batch_size, (i + 1) * eval_batch_size) for i in range(n_batches)]
        return [present(test.images[c], test.labels[c]) for c in chunks]

    return DataBundle(info=info, train=IndexedStream(make_batch, seed), eval_batches=eval_batches)
