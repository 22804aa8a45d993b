"""Where and in what precision a run computes: the rules training, evaluation and the benchmarks share."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def pick_device(name: str) -> torch.device:
    """train.device: auto (CUDA when visible, else CPU), cuda or cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    return torch.device(name)


def uses_bf16(device: torch.device, precision: str) -> bool:
    """Whether train.precision means bf16 autocast on this device: bf16, or auto on CUDA."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast on CUDA (precision auto|bf16); fp32 everywhere else."""
    if uses_bf16(device, precision):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()
