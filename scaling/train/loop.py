"""One training run: build -> train to budget -> evaluate -> checkpoint/resume -> record.

    python -m scaling.train model=gpt2 structure=btt model.width=256 train.tokens=2e6
    python -m scaling.train -m structure=dense,btt model.width=64,128    # the grid, launched as a sweep
    python -m scaling.train --help                                       # config groups and options (Hydra's flags)

The run directory (scaling.store.results) is named by the run's identity. Rerunning a finished run returns its summary;
rerunning an interrupted one resumes from its checkpoint and reproduces the uninterrupted loss curve exactly.
The loop below reads top to bottom; its steps are in scaling/train/steps.py, the run's files in scaling/train/run.py.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

from omegaconf import DictConfig, OmegaConf

from scaling.config.compose import with_new_defaults

from scaling.train.checkpoint import PreemptionGuard
from scaling.train.distributed import teardown
from scaling.store.lease import Lease, live_holder
from scaling.store.results import checked_root, read_summary
from scaling.store.states import FINISHED_STATES, RunState
from scaling.store.files import remove_temp_files
from scaling.train.run import Run
from scaling.train.steps import (
    build, checkpoint, checkpoint_due, diverged, finish, log_due, log_train, optimiser_step, record_divergence,
    record_eval, resume_or_start, snapshot, start_reporters, stop_preempted, taxonomy,
)

logger = logging.getLogger(__name__)

def train(cfg: DictConfig) -> dict[str, Any]:
    """Train the run described by `cfg` to its budget (resuming if interrupted); return its summary. It computes
    with train.threads CPU threads on train.device (`auto` resolved on this machine unless a launcher did)."""
    OmegaConf.resolve(cfg)
    checked_root(cfg.results_root, write=True)  # one line naming the folder and the fix, not a traceback later
    run = Run(with_new_defaults(cfg))
    existing = read_summary(run.dir)
    if existing and existing["status"] in FINISHED_STATES:
        return existing
    lease = Lease.acquire(run.dir) if run.dist.is_main else nullcontext()
    if lease is None:  # another launcher's job trains this run right now: never train it twice
        holder = live_holder(run.dir)
        who = holder.describe() if holder else "another process"
        logger.warning(f"run {run.plan.run_id}: skipped, {who} is training it (scaling.status shows its progress)")
        return {"run_id": run.plan.run_id, "status": RunState.RUNNING, "skipped": f"leased by {who}"}
    with lease:
        existing = read_summary(run.dir)  # it may have finished between the first look and taking the lease
        if existing and existing["status"] in FINISHED_STATES:
            return existing
        if run.dist.is_main:
            remove_temp_files(run.dir)  # left by a process that died mid-write; the lease holder alone writes
        try:
            run.setup()
            return train_to_budget(run)
        except Exception as err:
            run.write_summary(status=RunState.FAILED, error=f"{type(err).__name__}: {err}")
            raise
        finally:
            if run.dist.is_main:
                run.paths.heartbeat.unlink(missing_ok=True)
            teardown(run.dist)


def train_to_budget(run: Run) -> dict[str, Any]:
    """The training loop: every step trains, may log, evaluate and checkpoint; a preemption signal checkpoints
    at the next step boundary and exits; a diverged loss ends the run."""
    trainee = build(run)
    state = resume_or_start(run, trainee)
    extra = taxonomy(trainee.model) | {"restarts": state.restarts}
    run.heartbeat()
    run.write_summary(status=RunState.RUNNING, **run.consumed(state.step), **extra)
    reporters = start_reporters(run, state.wandb_id)
    state.start_clock()
    with PreemptionGuard() as guard:
        if state.step == 0:
            record_eval(run, trainee, state, reporters)
        while state.step < run.plan.steps:
            loss, lr = optimiser_step(run, trainee, state)
            if diverged(run, state, loss):
                record_divergence(run, state, loss)
                break
            if log_due(run, trainee, state):
                log_train(run, state, reporters, loss, lr)
            if state.step in trainee.evals:
                record_eval(run, trainee, state, reporters)
            if state.step in run.cfg.train.snapshot_steps:
                snapshot(run, trainee, state)
            preempted = guard.received is not None
            if preempted or checkpoint_due(run, state):
                checkpoint(run, trainee, state)
                if preempted:
                    stop_preempted(reporters, guard)
    return finish(run, trainee, state, reporters, extra)
