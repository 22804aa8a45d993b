"""Text data: random windows of a cached token stream for training, evenly spaced windows of the held-out tail
for evaluation. x is a window of `context` tokens and y the same window shifted by one (next-token targets)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from scaling.data.interface import DataInfo
from scaling.data.batching import Batch, DataBundle, IndexedStream, RankSlice, batch_generator, check_eval_request
from scaling.data.token_cache import TokenCache, ensure_cache


def _check_context(cache: TokenCache, context: int) -> None:
    if context <= 0:
        raise ValueError(f"model.context must be positive, got {context}")
    for split, field in (("train", "the corpus (data.path)"), ("val", "data.val_fraction")):
        tokens = cache.meta[f"{split}_tokens"]
        if tokens < context + 1:
            raise ValueError(
                f"the {split} split of {cache.directory} has {tokens} tokens, fewer than one window of "
                f"model.context + 1 = {context + 1}: lower model.context or raise {field}"
            )


def text_info(cfg: Any, context: int) -> DataInfo:
    """Vocabulary size from the cache's metadata (the cache is built first for local sources)."""
    cache = ensure_cache(cfg)
    _check_context(cache, context)
    return DataInfo(kind="text", unit="token", vocab_size=int(cache.meta["vocab_size"]), loss="cross_entropy")


def windows(tokens: np.ndarray, starts: np.ndarray, context: int) -> Batch:
    """x[b] = tokens[s_b : s_b + context], y[b] = tokens[s_b + 1 : s_b + context + 1], as int64."""
    chunk = torch.from_numpy(tokens[starts[:, None] + np.arange(context + 1)].astype(np.int64))
    return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()


def build_text(cfg: Any, *, context: int, batch_size: int, seed: int, rank: int, world_size: int) -> DataBundle:
    cache = ensure_cache(cfg)
    _check_context(cache, context)
    info = DataInfo(kind="text", unit="token", vocab_size=int(cache.meta["vocab_size"]), loss="cross_entropy")
    rows = RankSlice.of(batch_size, rank, world_size)
    train, val = cache.tokens("train"), cache.tokens("val")
    n_starts = train.size - context  # window starts 0 .. n - context - 1, so the last target is token n - 1

    def make_batch(index: int) -> Batch:
        g = batch_generator(seed, index)
        starts = torch.randint(n_starts, (rows.global_batch,), generator=g).numpy()
        return windows(train, starts[rows.start : rows.stop], context)

    def eval_batches(n_batches: int, eval_batch_size: int) -> list[Batch]:
        wanted = check_eval_request(n_batches, eval_batch_size, val.size - context, "data.val_fraction")
        starts = np.linspace(0, val.size - context - 1, num=wanted).round().astype(np.int64)
        return [
            windows(val, starts[i * eval_batch_size : (i + 1) * eval_batch_size], context) for i in range(n_batches)
        ]

    return DataBundle(info=info, train=IndexedStream(make_batch, seed), eval_batches=eval_batches)
