"""Cooldown branches: a wsd run that starts from a constant-LR trunk's snapshot at the first step of its decay.

Before its decay a wsd run's LR is a constant-LR run's, step for step (the same warmup in tokens, then the base LR),
and the data stream and RNG are in the snapshot, so a branch computes exactly what the same wsd run trained from
step 0 would: one trunk and a short decay per budget give an annealed read at every budget for about
(1 + decay_frac x the budgets' sum / the largest) times the trunk's cost. A sweep sets this up with
`budgets.cooldown` (scaling.launch.sweeps); the trunk keeps its snapshots at `train.snapshot_steps`, the branch
names it in `train.fork_from`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from scaling.store.files import RunFileError
from scaling.store.paths import RunPaths
from scaling.store.results import identity, read_jsonl, run_dir
from scaling.train.checkpoint import Checkpoint, load_checkpoint_file
from scaling.train.schedule import decay_start

# What a branch may set differently from its trunk: the schedule, its budget, and the cooldown bookkeeping.
BRANCH_KEYS = ("schedule", "decay_frac", "min_lr_frac", "tokens", "flops", "snapshot_steps", "fork_from")


class ForkError(RunFileError):
    """A branch whose trunk cannot give it its start; the message names the trunk's file and the fix."""


@dataclass
class Fork:
    state: Checkpoint  # the trunk's state at the branch's first decay step
    rows: list[dict[str, Any]]  # the trunk's metric rows up to that step


def trunk_identity(cfg: DictConfig | dict) -> dict[str, Any]:
    """What a branch and its trunk must share: the run identity without the BRANCH_KEYS."""
    ident = identity(cfg)
    ident["train"] = {k: v for k, v in ident["train"].items() if k not in BRANCH_KEYS}
    return ident


def fork_step(total_steps: int, decay_frac: float) -> int:
    """The trunk step a wsd branch of `total_steps` starts from: its decay's first step."""
    return decay_start(total_steps, decay_frac)


def fork_point(cfg: DictConfig, total_steps: int) -> Fork | None:
    """The trunk's snapshot and metric rows a branch (train.fork_from) starts from; None for any other run."""
    t = cfg.train
    if t.fork_from is None:
        return None
    trunk = RunPaths(run_dir(cfg.results_root, t.fork_from))
    step = fork_step(total_steps, t.decay_frac)
    if t.schedule != "wsd":
        raise ForkError(trunk.dir, f"train.fork_from is set but train.schedule={t.schedule}",
                        "a branch decays from its trunk: set train.schedule=wsd (or drop train.fork_from)")
    try:
        trunk_cfg = OmegaConf.to_container(OmegaConf.load(trunk.config), resolve=True)
    except (OSError, ValueError) as err:
        raise ForkError(trunk.config, f"the trunk has no readable config ({type(err).__name__})",
                        "train the trunk first (launch the sweep again: it trains trunks before branches)") from None
    if trunk_cfg["train"]["schedule"] != "constant":
        raise ForkError(trunk.config, f"the trunk's schedule is {trunk_cfg['train']['schedule']}, not constant",
                        "fork branches from a constant-LR run")
    if trunk_identity(trunk_cfg) != trunk_identity(cfg):
        raise ForkError(trunk.config, "the trunk differs from this branch in more than schedule and budget",
                        "fork from a trunk with this run's model, structure, data and train settings")
    state = load_checkpoint_file(trunk.snapshot(step))
    if state is None:
        raise ForkError(trunk.snapshot(step), "no snapshot at this branch's first decay step",
                        f"train the trunk with train.snapshot_steps including {step}")
    rows = [r for r in read_jsonl(trunk.metrics) if r["step"] <= step]
    return Fork(state, rows)
