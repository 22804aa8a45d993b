"""summary.json's keys, defined once: the trainer writes a Summary, the status command and the analysis read one.

The trainer writes it with status "running" when an attempt starts, then again when the run ends (a failed run
adds `error`). `flops` are training FLOPs (3 x forward) so far; `tokens` are training units (tokens for text,
examples for images/regression).
"""

from __future__ import annotations

from typing import TypedDict


class RunTotals(TypedDict, total=False):
    """What every finished run's summary holds: the run tables' columns (analysis.io.load), in this order."""

    run_id: str
    status: str  # one of scaling.store.states.SUMMARY_STATES
    sweep: str | None
    label: str
    family: str
    structure: str
    width: int
    depth: int
    parametrization: str
    lr: float
    seed: int
    params: int
    params_nonembed: int
    forward_flops_per_token: float
    train_flops_per_token: float
    tokens: float
    tokens_target: float
    flops: float
    final_val_loss: float | None  # None unless completed
    best_val_loss: float | None
    wall_time_s: float
    steps: int


class Summary(RunTotals, total=False):
    """Every key summary.json may hold: the totals, the rest of the run's plan, and what only some runs record."""

    unit: str  # token | example
    steps_target: int
    batch_size: int
    schedule: str
    restarts: int  # attempts before the last one (each resumed from the checkpoint)
    tokens_per_s: float
    omega: float  # taxonomy coordinates (Einsum and its subclasses)
    psi: float
    nu: float
    error: str  # why a failed run failed


TOTALS_KEYS = tuple(RunTotals.__annotations__)
SUMMARY_KEYS = tuple(Summary.__annotations__)
