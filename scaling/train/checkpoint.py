"""Checkpoints (atomic, weights-only loadable) and the preemption signals that trigger them."""

from __future__ import annotations

import io
import signal
from pathlib import Path
from types import FrameType
from typing import Any, Callable, TypedDict

import torch

from scaling.store.results import atomic_write_bytes
from scaling.store.files import RunFileError
from scaling.store.paths import RunPaths


class Checkpoint(TypedDict):
    """checkpoint.pt: everything a resume needs, as a plain dict (so it loads with weights_only=True)."""

    model: dict[str, torch.Tensor]  # the model's state_dict
    optimizer: dict[str, Any]  # the optimizer's state_dict (its per-parameter step counts check `step`)
    data: dict[str, Any]  # the training stream's position
    rng: torch.Tensor  # torch's CPU generator state
    step: int  # optimiser steps taken
    wall_s: float  # seconds trained, earlier attempts included
    best_val_loss: float  # inf before the first evaluation
    initial_loss: float | None  # the first step's training loss: divergence is measured against it
    wandb_id: str
    restarts: int  # attempts before the one that saved it


CHECKPOINT_KEYS = tuple(Checkpoint.__annotations__)
_RESTART_FIX = "delete it to restart the run from step 0"
# What Slurm/submitit send before a timeout or preemption (USR2), and a plain kill (TERM).
PREEMPT_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


def save_checkpoint(rdir: Path, state: Checkpoint) -> None:
    """Serialise in memory, then write temp + fsync + rename, so a crash never leaves a torn checkpoint."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(RunPaths(rdir).checkpoint, buf.getvalue())


def load_checkpoint(rdir: Path) -> Checkpoint | None:
    """The run's checkpoint, None if it has none; RunFileError (path and fix) if it cannot be loaded."""
    return load_checkpoint_file(RunPaths(rdir).checkpoint)


def save_snapshot(rdir: Path, state: Checkpoint) -> None:
    """Keep the state at this step as snapshots/step_<N>.pt (atomic), where cooldown branches fork."""
    buf = io.BytesIO()
    torch.save(state, buf)
    path = RunPaths(rdir).snapshot(state["step"])
    path.parent.mkdir(exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint_file(path: Path) -> Checkpoint | None:
    """The checkpoint at `path`, None if there is none; RunFileError (path and fix) if it cannot be loaded."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a torn, truncated or foreign file
        raise RunFileError(path, f"not a loadable checkpoint ({type(err).__name__})", _RESTART_FIX) from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise RunFileError(path, f"not a checkpoint of this trainer (missing {', '.join(missing)})", _RESTART_FIX)
    return state


def check_checkpoint_step(rdir: Path, state: Checkpoint, total_steps: int) -> None:
    """Check the checkpoint's step against the optimizer's own step count (AdamW counts every update), so an
    edited or foreign checkpoint cannot pass for a finished run."""
    path, step = RunPaths(rdir).checkpoint, state["step"]
    counts = [int(s["step"]) for s in state["optimizer"].get("state", {}).values() if "step" in s]
    if not isinstance(step, int) or not 0 <= step <= total_steps:
        raise RunFileError(path, f"step {step!r} is outside this run's 0..{total_steps} steps", _RESTART_FIX)
    if max(counts, default=0) != step:
        raise RunFileError(path, f"step {step} disagrees with the optimizer's {max(counts, default=0)} updates",
                           _RESTART_FIX)


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
