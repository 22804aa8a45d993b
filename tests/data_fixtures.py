"""Small data files in the real formats (text corpora, gzipped IDX), shared by the data tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

WORDS = "thou art the king of all that lies between heaven and earth my lord good night sweet prince".split()


# --- fixtures: small files in the real formats -------------------------------------------------------------------


def write_corpus(root: Path, n_files: int = 3, lines: int = 200, seed: int = 0) -> Path:
    """A directory of text files of pseudo-random lines of words."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        text = "\n".join(" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(lines))
        (root / f"doc{f}.txt").write_text(text + "\n", encoding="utf-8")
    return root


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: two zero bytes, type 0x08 (uint8), ndim, then big-endian uint32 dims and the raw data."""
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(root: Path, n_train: int = 24, n_test: int = 10, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    x_train = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    x_train[:, 0, 0] = np.arange(n_train)  # identity of each training image
    y_train = rng.integers(0, 10, size=n_train).astype(np.uint8)
    x_test = rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)
    y_test = rng.integers(0, 10, size=n_test).astype(np.uint8)
    for name, arr in (("train-images-idx3-ubyte", x_train), ("train-labels-idx1-ubyte", y_train),
                      ("t10k-images-idx3-ubyte", x_test), ("t10k-labels-idx1-ubyte", y_test)):
        (root / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    return x_train, y_train, x_test, y_test
