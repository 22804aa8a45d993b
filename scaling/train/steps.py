"""The named steps of one training run, in the order scaling/train/loop.py calls them: build, resume or start, one
optimiser step, divergence, logging, evaluation, checkpointing and the summary. What changes while training lives
in one TrainState; what is trained in one Trainee."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel

from scaling.train.budget_evals import budget_steps
from scaling.train.checkpoint import (
    Checkpoint, PreemptionGuard, check_checkpoint_step, load_checkpoint, save_checkpoint, save_snapshot,
)
from scaling.train.fork import fork_point
from scaling.config.schema import LoggerConfig, ModelConfig, StructureConfig
from scaling.config.compose import as_dataclass
from scaling.data import build_data
from scaling.data.batching import DataBundle
from scaling.train.device import autocast_for
from scaling.train.distributed import all_reduce_mean, barrier
from scaling.mup.parametrization import build_parametrized_model, make_optimizer
from scaling.train.progress import RunProgress, run_tag
from scaling.store.files import RunFileError, read_config_file
from scaling.store.results import IDENTITY_SECTIONS, atomic_write_bytes, identity, jsonl_bytes, read_jsonl
from scaling.store.states import RunState
from scaling.store.summary import Summary
from scaling.train.run import Run
from scaling.train.schedule import lr_factor
from scaling.structures import StructuredLinear
from scaling.train.tracking import (Tracker, import_wandb_under, run_name, run_tags, wandb_config, wandb_mode,
                                     wandb_run_id)


@dataclass
class Trainee:
    """What is trained, and the fixed batches and steps it is evaluated on."""

    data: DataBundle  # the training stream, the evaluation batches, the data's info
    model: torch.nn.Module
    trained: torch.nn.Module  # the model, DDP-wrapped when several processes train it
    optimizer: torch.optim.Optimizer
    eval_set: list
    evals: list[int]  # the steps that evaluate (log-spaced points and FLOP budgets)


@dataclass
class TrainState:
    """What changes while the run trains; all but the clocks and the status goes into the checkpoint."""

    step: int = 0
    wall_before: float = 0.0  # seconds trained by earlier attempts of this run
    best: float = math.inf  # best validation loss so far
    initial_loss: float | None = None  # the first step's training loss: divergence is measured against it
    wandb_id: str = ""
    restarts: int = 0
    status: RunState = RunState.COMPLETED
    start: float = 0.0  # this attempt's clock (time.perf_counter) when its first step began
    last_checkpoint: float = 0.0
    window_start: float = 0.0  # throughput is measured over the steps since the last train row
    window_steps: int = 0

    def start_clock(self) -> None:
        self.start = time.perf_counter()
        self.last_checkpoint = self.window_start = time.perf_counter()

    def wall(self, now: float) -> float:
        """Seconds trained by this run so far, earlier attempts included."""
        return self.wall_before + (now - self.start)


@dataclass
class Reporters:
    """Where rows go besides metrics.jsonl: the tracker (rank 0 only) and the progress file."""

    tracker: Tracker | None
    progress: RunProgress


def eval_steps(total_steps: int, points: int) -> list[int]:
    """Step 0, `points` log-spaced steps in [1, total], and the last step."""
    spaced = np.geomspace(1, total_steps, max(points, 1)) if total_steps > 1 else np.array([1.0])
    return sorted({0, total_steps, *(int(round(s)) for s in spaced)})


def taxonomy(model: torch.nn.Module) -> dict[str, float]:
    """The taxonomy coordinates of the model's first structured layer that has any (Einsum's omega, psi, nu)."""
    for layer in model.modules():
        if isinstance(layer, StructuredLinear) and layer.taxonomy():
            return layer.taxonomy()
    return {}


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list, device: torch.device, precision: str) -> dict[str, float]:
    """Mean held-out loss (and accuracy for classification) over fixed evaluation batches."""
    model.eval()
    losses, correct, count = [], 0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with autocast_for(device, precision):
            out, loss = model(x, y)
        losses.append(float(loss))
        if y.dtype == torch.long and out.dim() == 2:
            correct += int((out.argmax(-1) == y).sum())
            count += y.numel()
    model.train()
    metrics = {"val_loss": float(np.mean(losses))}
    if count:
        metrics["val_accuracy"] = correct / count
    return metrics


# --- before the first step ---------------------------------------------------------------------------
def build(run: Run) -> Trainee:
    """Seed, then the data, the parametrised model and its optimiser, the evaluation batches and steps."""
    cfg, t, dist = run.cfg, run.cfg.train, run.dist
    run.dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(t.seed)
    data = build_data(cfg.data, context=cfg.model.context, batch_size=t.batch_size, seed=t.seed,
                      rank=dist.rank, world_size=dist.world_size)
    model_cfg = as_dataclass(cfg.model, ModelConfig)
    structure_cfg = as_dataclass(cfg.structure, StructureConfig)
    model, rules = build_parametrized_model(model_cfg, structure_cfg, data.info)
    model.to(run.device)
    optimizer = make_optimizer(model, rules, lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay)
    trained = DistributedDataParallel(model) if dist.world_size > 1 else model
    eval_set = data.eval_batches(t.eval_batches, max(1, t.batch_size))
    evals = sorted({*eval_steps(run.plan.steps, t.eval_points), *budget_steps(t.eval_flops, run.plan)})
    return Trainee(data, model, trained, optimizer, eval_set, evals)


def resume_or_start(run: Run, trainee: Trainee) -> TrainState:
    """From the checkpoint if there is one (metrics after it are dropped: they will be logged again, identically);
    else a fresh run that writes its config and starts an empty metrics file."""
    ckpt = load_checkpoint(run.dir)
    if ckpt is None:
        fork = fork_point(run.cfg, run.plan.steps)  # a cooldown branch starts from its trunk's snapshot
        if run.dist.is_main:
            atomic_write_bytes(run.paths.config, OmegaConf.to_yaml(run.cfg).encode())
            run.paths.metrics.unlink(missing_ok=True)
        if fork is None:
            return TrainState(wandb_id=wandb_run_id(run.plan.run_id))
        if run.dist.is_main:  # the trunk's rows up to the fork: the branch's curve is whole
            atomic_write_bytes(run.paths.metrics, jsonl_bytes(fork.rows))
        _load_state(trainee, fork.state)
        return TrainState(step=fork.state["step"], best=fork.state["best_val_loss"],
                          initial_loss=fork.state["initial_loss"], wandb_id=wandb_run_id(run.plan.run_id))
    check_checkpoint_step(run.dir, ckpt, run.plan.steps)
    check_same_identity(run)
    _load_state(trainee, ckpt)
    if run.dist.is_main:
        run.truncate_metrics(ckpt["step"], trainee.evals)
    return TrainState(step=ckpt["step"], wall_before=ckpt["wall_s"], best=ckpt["best_val_loss"],
                      initial_loss=ckpt["initial_loss"], wandb_id=ckpt["wandb_id"], restarts=ckpt["restarts"] + 1)


def _load_state(trainee: Trainee, ckpt: Checkpoint) -> None:
    """Weights, optimiser, data position and RNG: training continues exactly where `ckpt` was taken."""
    trainee.model.load_state_dict(ckpt["model"])
    trainee.optimizer.load_state_dict(ckpt["optimizer"])
    trainee.data.train.load_state_dict(ckpt["data"])
    torch.set_rng_state(ckpt["rng"])


def _flat(ident: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in ident.items() for key, value in values.items()}


def check_same_identity(run: Run) -> None:
    """A checkpoint resumes only under the settings its run id pins: each one this process would run with (the
    torch thread count included) must be the one config.yaml recorded when the run started."""
    saved = read_config_file(run.paths.config)
    if saved is None or not all(isinstance(saved.get(s), dict) for s in IDENTITY_SECTIONS):
        return
    before, now = _flat(identity(saved)), _flat(identity(run.cfg))
    now["train.threads"] = torch.get_num_threads()  # what this process computes with (Run.setup set it)
    differ = [key for key in before if key in now and before[key] != now[key]]
    if differ:
        key = differ[0]
        raise RunFileError(run.paths.config, f"the checkpoint was trained with {key}={before[key]}, and this process "
                           f"would resume it with {key}={now[key]} ({key} is part of the run id, and changes the "
                           "numbers)", f"resume with {key}={before[key]}, or delete {run.dir} to retrain the run")


def start_reporters(run: Run, wandb_id: str) -> Reporters:
    """The tracker (wandb or none; rank 0 only) and the progress file that scaling.status reads."""
    cfg, dist = run.cfg, run.dist
    logger_cfg = as_dataclass(cfg.logger, LoggerConfig)
    if dist.is_main and wandb_mode(logger_cfg) != "disabled":
        import_wandb_under(run.paths.wandb)
    config = wandb_config(OmegaConf.to_container(cfg), run.plan.as_dict())
    tracker = Tracker(logger_cfg, run.dir, wandb_id, run_name(config), cfg.sweep, config=config,
                      tags=run_tags(config)) if dist.is_main else None
    progress = RunProgress(run.dir, run_tag(cfg), run.plan.steps, run.plan.unit, enabled=dist.is_main)
    return Reporters(tracker, progress)


# --- every step ----------------------------------------------------------------------------------------
def optimiser_step(run: Run, trainee: Trainee, state: TrainState) -> tuple[float, float]:
    """Set the scheduled learning rate, train on the next batch, step; return (loss averaged over ranks, lr)."""
    t = run.cfg.train
    factor = lr_factor(state.step, run.plan.steps, t.schedule, run.plan.warmup_steps, t.min_lr_frac, t.decay_frac)
    for group in trainee.optimizer.param_groups:
        group["lr"] = t.lr * factor * group["lr_mult"]
    x, y = trainee.data.train.next_batch()
    x, y = x.to(run.device), y.to(run.device)
    with autocast_for(run.device, t.precision):
        _, loss = trainee.trained(x, y)
        aux = trainee.model.aux_loss()
        total = loss if aux is None else loss + run.cfg.structure.aux_weight * aux
    trainee.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if t.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(trainee.model.parameters(), t.grad_clip)
    trainee.optimizer.step()
    state.step += 1
    state.window_steps += 1
    run.heartbeat()
    loss_value = float(all_reduce_mean(loss.detach(), run.dist))
    state.initial_loss = loss_value if state.initial_loss is None else state.initial_loss
    return loss_value, t.lr * factor


def diverged(run: Run, state: TrainState, loss: float) -> bool:
    """Not finite, or above train.diverge_factor x the first step's loss."""
    return not math.isfinite(loss) or loss > run.cfg.train.diverge_factor * state.initial_loss


def record_divergence(run: Run, state: TrainState, loss: float) -> None:
    state.status = RunState.DIVERGED
    run.log({"kind": "train", "step": state.step, "loss": loss, **run.consumed(state.step)})
    run.flush_metrics()


def log_due(run: Run, trainee: Trainee, state: TrainState) -> bool:
    return state.step % run.cfg.train.log_every == 0 or state.step in trainee.evals


def log_train(run: Run, state: TrainState, reporters: Reporters, loss: float, lr: float) -> None:
    """A train row: loss, lr and the throughput since the last one."""
    plan, now = run.plan, time.perf_counter()
    rate = state.window_steps * plan.units_per_step / max(now - state.window_start, 1e-9)
    row = {"kind": "train", "step": state.step, **run.consumed(state.step), "loss": loss, "lr": lr,
           "tokens_per_s": rate, "flops_per_s": rate * plan.train_flops_per_unit, "wall_s": state.wall(now)}
    run.log(row)
    if reporters.tracker:
        reporters.tracker.log(row, state.step)
    reporters.progress.report(state.step, row["tokens"], row["flops"], loss, rate)
    state.window_start, state.window_steps = now, 0


def record_eval(run: Run, trainee: Trainee, state: TrainState, reporters: Reporters) -> None:
    """Evaluate on rank 0, log the eval row, flush the metrics; every rank waits for it."""
    metrics = evaluate(trainee.model, trainee.eval_set, run.device, run.cfg.train.precision) if run.dist.is_main else {}
    if metrics:
        state.best = min(state.best, metrics["val_loss"])
        row = {"kind": "eval", "step": state.step, **run.consumed(state.step),
               "wall_s": state.wall(time.perf_counter()), **metrics}
        run.log(row)
        reporters.tracker.log(row, state.step)
    run.flush_metrics()
    barrier(run.dist)


# --- checkpoints and preemption --------------------------------------------------------------------------
def checkpoint_due(run: Run, state: TrainState) -> bool:
    return time.perf_counter() - state.last_checkpoint > run.cfg.train.checkpoint_every_s


def checkpoint_state(trainee: Trainee, state: TrainState) -> Checkpoint:
    return Checkpoint(model=trainee.model.state_dict(), optimizer=trainee.optimizer.state_dict(),
                      data=trainee.data.train.state_dict(), rng=torch.get_rng_state(), step=state.step,
                      wall_s=state.wall(time.perf_counter()), best_val_loss=state.best,
                      initial_loss=state.initial_loss, wandb_id=state.wandb_id, restarts=state.restarts)


def checkpoint(run: Run, trainee: Trainee, state: TrainState) -> None:
    """Flush the metrics, then save everything a resume needs (rank 0)."""
    run.flush_metrics()
    if run.dist.is_main:
        save_checkpoint(run.dir, checkpoint_state(trainee, state))
    state.last_checkpoint = time.perf_counter()


def snapshot(run: Run, trainee: Trainee, state: TrainState) -> None:
    """Keep this step's state for the cooldown branches that fork here (rank 0)."""
    run.flush_metrics()
    if run.dist.is_main:
        save_snapshot(run.dir, checkpoint_state(trainee, state))


def stop_preempted(reporters: Reporters, guard: PreemptionGuard) -> None:
    """After the checkpoint: close the tracker as failed and hand the signal on (exits the process)."""
    if reporters.tracker:
        reporters.tracker.finish(exit_code=1)
    guard.forward_signal()


# --- after the last step ---------------------------------------------------------------------------------
def finish(run: Run, trainee: Trainee, state: TrainState, reporters: Reporters, extra: dict[str, Any]) -> Summary:
    """Save the final weights (completed runs), write the summary, close the tracker; return the summary."""
    wall = state.wall(time.perf_counter())
    rows = read_jsonl(run.paths.metrics) if run.dist.is_main else []
    eval_rows = [r for r in rows if r.get("kind") == "eval"]
    completed = state.status == RunState.COMPLETED
    final = eval_rows[-1]["val_loss"] if eval_rows and completed else None
    if run.dist.is_main and completed:
        save_checkpoint(run.dir, checkpoint_state(trainee, state))  # the final weights, for users of the model
    best = state.best if math.isfinite(state.best) else None
    summary = run.write_summary(
        status=state.status, **run.consumed(state.step), steps=state.step, final_val_loss=final,
        best_val_loss=best, wall_time_s=wall, tokens_per_s=state.step * run.plan.units_per_step / max(wall, 1e-9),
        **extra,
    )
    if run.dist.is_main:
        settings = OmegaConf.to_container(run.cfg.structure, resolve=True)  # filterable: structure.rank, ...
        reporters.tracker.summary({k: v for k, v in summary.items() if v is not None}
                                  | {"n_eff": run.plan.train_flops_per_unit / 6, "structure_settings": settings})
        reporters.tracker.finish(exit_code=0 if completed else 1)
    return summary
