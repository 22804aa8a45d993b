"""Learning-rate schedules as a multiplier of the base LR at each optimiser step."""

from __future__ import annotations

import math

from scaling.config.schema import SCHEDULES  # noqa: F401  (the names live with the schema)


def warmup_steps(warmup_units: int, units_per_step: int) -> int:
    """Optimiser steps of a warmup of `warmup_units` training units (the same for every run length)."""
    return math.ceil(warmup_units / units_per_step)


def decay_start(total_steps: int, decay_frac: float) -> int:
    """The first step of a wsd run's decay: before it the LR is a constant-LR run's, step for step."""
    return total_steps - max(1, round(decay_frac * total_steps))


def lr_factor(step: int, total_steps: int, schedule: str, warmup: int, min_lr_frac: float,
              decay_frac: float = 0.2) -> float:
    """Multiplier of the base LR for `step` in [0, total_steps).

    All schedules warm up linearly over the first `warmup` steps (a run shorter than that never reaches the base
    LR), then:
      cosine:   min + (1 - min) * (1 + cos(pi * progress)) / 2 down to min_lr_frac at the last step
      constant: 1
      wsd:      1 (stable) until the last decay_frac of steps, then linear decay to min_lr_frac
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"train.schedule={schedule!r} is not known; choose one of {SCHEDULES}")
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = max(1, total_steps - 1 - warmup)
        progress = min(1.0, (step - warmup) / span)
        return min_lr_frac + (1 - min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress))
    start = decay_start(total_steps, decay_frac)
    if step < start:
        return 1.0
    progress = min(1.0, (step - start + 1) / (total_steps - start))
    return 1.0 - (1.0 - min_lr_frac) * progress
