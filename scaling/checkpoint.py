"""Checkpoints (atomic, weights-only loadable) and the preemption signals that trigger them."""

from __future__ import annotations

import io
import signal
from pathlib import Path
from types import FrameType
from typing import Any, Callable

import torch

from scaling.results import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.pt"
# What Slurm/submitit send before a timeout or preemption (USR2), and a plain kill (TERM).
PREEMPT_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


def save_checkpoint(rdir: Path, state: dict[str, Any]) -> None:
    """Serialise in memory, then write temp + fsync + rename, so a crash never leaves a torn checkpoint."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(rdir / CHECKPOINT_NAME, buf.getvalue())


def load_checkpoint(rdir: Path) -> dict[str, Any] | None:
    path = rdir / CHECKPOINT_NAME
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


class PreemptionGuard:
    """Records USR2/TERM instead of dying mid-step; the training loop checkpoints at the next step boundary.

    After checkpointing, `forward_signal()` hands the signal to whoever had it before (submitit's handler
    requeues the job); with no previous Python handler the process exits with 128 + signum.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "PreemptionGuard":
        for sig in PREEMPT_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def forward_signal(self) -> None:
        signum = self.received
        assert signum is not None
        previous = self._previous.get(signum)
        self.__exit__()
        if isinstance(previous, Callable):  # type: ignore[arg-type]
            previous(signum, None)
        raise SystemExit(128 + signum)
