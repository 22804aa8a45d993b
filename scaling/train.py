"""One training run: build -> train to budget -> evaluate -> checkpoint/resume -> record.

    python -m scaling.train model=gpt2 structure=btt model.width=256 train.tokens=2e6
    python -m scaling.train -m structure=dense,btt model.width=64,128    # the grid, launched as a sweep
    python -m scaling.train --help                                       # config groups and options (Hydra's flags)

The run directory (scaling.results) is named by the run's identity. Rerunning a finished run returns its summary;
rerunning an interrupted one resumes from its checkpoint and reproduces the uninterrupted loss curve exactly.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from scaling.budget_evals import budget_steps
from scaling.checkpoint import PreemptionGuard, check_checkpoint_step, load_checkpoint, save_checkpoint
from scaling.cli import Command, run_command
from scaling.configs import as_dataclass, compose_run_config
from scaling.data import build_data
from scaling.labels import run_label
from scaling.multirun import multirun
from scaling.distributed import DistInfo, all_reduce_mean, barrier, cpu_threads, setup_distributed, teardown
from scaling.lease import Lease, live_holder
from scaling.parametrization import build_parametrized_model, make_optimizer
from scaling.config import LoggerConfig, ModelConfig, StructureConfig
from scaling.plan import ConfigError, RunPlan, plan_run
from scaling.process import keep_freed_memory
from scaling.progress import RunProgress
from scaling.results import (
    append_jsonl, atomic_write_bytes, atomic_write_json, jsonl_bytes, read_jsonl, read_summary, run_dir,
)
from scaling.run_files import RunFileError, remove_temp_files
from scaling.run_paths import RunPaths
from scaling.schedule import lr_factor
from scaling.tracking import Tracker, import_wandb_under, run_name, run_tags, wandb_mode, wandb_run_id
from scaling.validate import describe_error

FINISHED = ("completed", "diverged")


def eval_steps(total_steps: int, points: int) -> list[int]:
    """Step 0, `points` log-spaced steps in [1, total], and the last step."""
    spaced = np.geomspace(1, total_steps, max(points, 1)) if total_steps > 1 else np.array([1.0])
    return sorted({0, total_steps, *(int(round(s)) for s in spaced)})


def pick_device(name: str) -> torch.device:
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


def taxonomy(model: torch.nn.Module) -> dict[str, float]:
    """Einsum taxonomy coordinates (omega, psi, nu) of the model's einsum layers, if any."""
    for layer in model.modules():
        if getattr(layer, "structure", "") == "einsum":
            return {"omega": float(layer.omega), "psi": float(layer.psi), "nu": float(layer.nu)}
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


class Run:
    """State and bookkeeping of one training run (rank 0 writes; every rank trains)."""

    def __init__(self, cfg: DictConfig, cpus: int | None = None):
        self.cfg = cfg
        self.cpus = cpus  # threads allotted by the launcher (None: Slurm's share, else this process's CPUs)
        self.plan: RunPlan = plan_run(cfg)
        self.dir = run_dir(cfg.results_root, self.plan.run_id)
        self.paths = RunPaths(self.dir)
        self.device = torch.device("cpu")
        self.dist = DistInfo(rank=int(os.environ.get("RANK", "0")))  # until the process group is joined
        self.pending_rows: list[dict[str, Any]] = []
        self.last_beat = -math.inf

    def setup(self) -> None:
        """Device, process group, threads and malloc reuse (may fail: recorded as a failed run)."""
        self.device = pick_device(self.cfg.train.device)
        self.dist = setup_distributed(self.device)
        torch.set_num_threads(cpu_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), allotted=self.cpus))
        keep_freed_memory()  # activations are reallocated every step (scaling/process.py)

    def heartbeat(self, every_s: float = 30.0) -> None:
        """Tell launchers this run is alive (scaling.launch leaves runs with a fresh heartbeat alone)."""
        now = time.time()
        if self.dist.is_main and now - self.last_beat >= every_s:
            atomic_write_json(self.paths.heartbeat, {"time": now, "host": socket.gethostname(), "pid": os.getpid()})
            self.last_beat = now

    # --- files -----------------------------------------------------------------------------------
    def write_summary(self, **values: Any) -> dict[str, Any]:
        p, cfg = self.plan, self.cfg
        summary = {
            "run_id": p.run_id, "sweep": cfg.sweep, "label": run_label(cfg), "family": p.family, "structure": p.structure,
            "width": p.width, "depth": cfg.model.depth, "parametrization": cfg.model.parametrization,
            "lr": cfg.train.lr, "seed": cfg.train.seed, "unit": p.unit, "params": p.params,
            "params_nonembed": p.params_nonembed, "forward_flops_per_token": p.forward_flops_per_unit,
            "train_flops_per_token": p.train_flops_per_unit, "tokens_target": p.units, "steps_target": p.steps,
            "batch_size": cfg.train.batch_size, "schedule": cfg.train.schedule,
        } | values
        if self.dist.is_main:
            atomic_write_json(self.paths.summary, summary)
        return summary

    def flush_metrics(self) -> None:
        if self.dist.is_main:
            append_jsonl(self.paths.metrics, self.pending_rows)
        self.pending_rows = []

    def truncate_metrics(self, last_step: int, evals: list[int]) -> None:
        """On resume, drop rows logged after the checkpoint (they will be produced again, identically), and warn
        when evaluation rows up to the checkpoint are missing (the resumed curve would have gaps)."""
        path = self.paths.metrics
        rows = [r for r in read_jsonl(path) if r["step"] <= last_step]
        atomic_write_bytes(path, jsonl_bytes(rows))
        have = {r["step"] for r in rows if r.get("kind") == "eval"}
        lost = [s for s in evals if s <= last_step and s not in have]
        if lost:
            print(f"warning: {path}: {len(lost)} evaluation row(s) before the checkpoint's step {last_step} are "
                  f"missing (steps {lost[:5]}); the run resumes with gaps in its curve: delete {self.dir} to "
                  "retrain it whole", file=sys.stderr)


def train(cfg: DictConfig, cpus: int | None = None) -> dict[str, Any]:
    """Train the run described by `cfg` to its budget (resuming if interrupted); return its summary. cpus: the
    threads the launcher allotted (Slurm's SLURM_CPUS_PER_TASK wins; None: the CPUs this process may use)."""
    OmegaConf.resolve(cfg)
    run = Run(cfg, cpus)
    existing = read_summary(run.dir)
    if existing and existing.get("status") in FINISHED:
        return existing
    lease = Lease.acquire(run.dir) if run.dist.is_main else nullcontext()
    if lease is None:  # another launcher's job trains this run right now: never train it twice
        holder = live_holder(run.dir)
        who = holder.describe() if holder else "another process"
        print(f"run {run.plan.run_id}: skipped, {who} is training it (scaling.status shows its progress)",
              file=sys.stderr)
        return {"run_id": run.plan.run_id, "status": "running", "skipped": f"leased by {who}"}
    with lease:
        existing = read_summary(run.dir)  # it may have finished between the first look and taking the lease
        if existing and existing.get("status") in FINISHED:
            return existing
        if run.dist.is_main:
            remove_temp_files(run.dir)  # left by a process that died mid-write; the lease holder alone writes
        try:
            run.setup()
            return _train(run)
        except Exception as err:
            run.write_summary(status="failed", error=f"{type(err).__name__}: {err}")
            raise
        finally:
            if run.dist.is_main:
                run.paths.heartbeat.unlink(missing_ok=True)
            teardown(run.dist)


def _train(run: Run) -> dict[str, Any]:
    cfg, plan, dev, dist = run.cfg, run.plan, run.device, run.dist
    t = cfg.train
    run.dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(t.seed)
    data = build_data(cfg.data, context=cfg.model.context, batch_size=t.batch_size, seed=t.seed,
                      rank=dist.rank, world_size=dist.world_size)
    model_cfg = as_dataclass(cfg.model, ModelConfig)
    structure_cfg = as_dataclass(cfg.structure, StructureConfig)
    model, rules = build_parametrized_model(model_cfg, structure_cfg, data.info)
    model.to(dev)
    optimizer = make_optimizer(model, rules, lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay)
    trained = DistributedDataParallel(model) if dist.world_size > 1 else model
    eval_set = data.eval_batches(t.eval_batches, max(1, t.batch_size))
    evals = sorted({*eval_steps(plan.steps, t.eval_points), *budget_steps(t.eval_flops, plan)})

    step, wall_before, best, initial_loss, restarts = 0, 0.0, math.inf, None, 0
    ckpt = load_checkpoint(run.dir)
    if ckpt is not None:
        check_checkpoint_step(run.dir, ckpt, plan.steps)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        data.train.load_state_dict(ckpt["data"])
        torch.set_rng_state(ckpt["rng"])
        step, wall_before, best = ckpt["step"], ckpt["wall_s"], ckpt["best_val_loss"]
        initial_loss, wandb_id, restarts = ckpt["initial_loss"], ckpt["wandb_id"], ckpt["restarts"] + 1
        if dist.is_main:
            run.truncate_metrics(step, evals)
    else:
        wandb_id = wandb_run_id(plan.run_id)
        if dist.is_main:
            atomic_write_bytes(run.paths.config, OmegaConf.to_yaml(cfg).encode())
            run.paths.metrics.unlink(missing_ok=True)
    def done() -> dict[str, float]:
        """Training units and FLOPs consumed after `step` optimiser steps."""
        return {"tokens": step * plan.units_per_step, "flops": step * plan.units_per_step * plan.train_flops_per_unit}

    summary_extra = taxonomy(model) | {"restarts": restarts}
    run.heartbeat()
    run.write_summary(status="running", **done(), **summary_extra)

    logger_cfg = as_dataclass(cfg.logger, LoggerConfig)
    if dist.is_main and wandb_mode(logger_cfg) != "disabled":
        import_wandb_under(run.paths.wandb)
    tracker = Tracker(logger_cfg, run.dir, wandb_id, run_name(cfg), cfg.sweep,
                      config=OmegaConf.to_container(cfg) | {"run_id": plan.run_id, **plan.as_dict()},
                      tags=run_tags(cfg)) if dist.is_main else None

    def checkpoint_state() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "data": data.train.state_dict(), "rng": torch.get_rng_state(), "step": step,
                "wall_s": wall_before + (time.perf_counter() - start), "best_val_loss": best,
                "initial_loss": initial_loss, "wandb_id": wandb_id, "restarts": restarts}

    def record_eval() -> dict[str, float]:
        nonlocal best
        metrics = evaluate(model, eval_set, dev, t.precision) if dist.is_main else {}
        if metrics:
            best = min(best, metrics["val_loss"])
            row = {"kind": "eval", "step": step, **done(), "wall_s": wall_before + time.perf_counter() - start,
                   **metrics}
            run.pending_rows.append(row)
            tracker.log(row, step)
        run.flush_metrics()
        barrier(dist)
        return metrics

    progress = RunProgress(run.dir, run_label(cfg), plan.steps, plan.unit, enabled=dist.is_main)
    start = time.perf_counter()
    last_ckpt = window_start = time.perf_counter()
    window_steps = 0
    status = "completed"
    with PreemptionGuard() as guard:
        if step == 0:
            record_eval()
        while step < plan.steps:
            factor = lr_factor(step, plan.steps, t.schedule, t.warmup_frac, t.min_lr_frac, t.decay_frac)
            for group in optimizer.param_groups:
                group["lr"] = t.lr * factor * group["lr_mult"]
            x, y = data.train.next_batch()
            x, y = x.to(dev), y.to(dev)
            with autocast_for(dev, t.precision):
                _, loss = trained(x, y)
                aux = model.aux_loss()
                total = loss if aux is None else loss + cfg.structure.aux_weight * aux
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            step += 1
            window_steps += 1
            run.heartbeat()
            loss_value = float(all_reduce_mean(loss.detach(), dist))
            initial_loss = loss_value if initial_loss is None else initial_loss

            if not math.isfinite(loss_value) or loss_value > t.diverge_factor * initial_loss:
                status = "diverged"
                run.pending_rows.append({"kind": "train", "step": step, "loss": loss_value, **done()})
                run.flush_metrics()
                break
            if step % t.log_every == 0 or step in evals:
                now = time.perf_counter()
                rate = window_steps * plan.units_per_step / max(now - window_start, 1e-9)
                row = {"kind": "train", "step": step, **done(), "loss": loss_value, "lr": t.lr * factor,
                       "tokens_per_s": rate, "flops_per_s": rate * plan.train_flops_per_unit,
                       "wall_s": wall_before + now - start}
                run.pending_rows.append(row)
                if tracker:
                    tracker.log(row, step)
                progress.report(step, row["tokens"], row["flops"], loss_value, rate)
                window_start, window_steps = now, 0
            if step in evals:
                record_eval()
            preempted = guard.received is not None
            if preempted or time.perf_counter() - last_ckpt > t.checkpoint_every_s:
                run.flush_metrics()
                if dist.is_main:
                    save_checkpoint(run.dir, checkpoint_state())
                last_ckpt = time.perf_counter()
                if preempted:
                    if tracker:
                        tracker.finish(exit_code=1)
                    guard.forward_signal()

    wall = wall_before + time.perf_counter() - start
    rows = read_jsonl(run.paths.metrics) if dist.is_main else []
    eval_rows = [r for r in rows if r.get("kind") == "eval"]
    final = eval_rows[-1]["val_loss"] if eval_rows and status == "completed" else None
    if dist.is_main and status == "completed":
        save_checkpoint(run.dir, checkpoint_state())  # the final weights, for users of the trained model
    summary = run.write_summary(
        status=status, **done(), steps=step,
        final_val_loss=final, best_val_loss=best if math.isfinite(best) else None, wall_time_s=wall,
        tokens_per_s=step * plan.units_per_step / max(wall, 1e-9), **summary_extra,
    )
    if dist.is_main:
        tracker.summary({k: v for k, v in summary.items() if v is not None})
        tracker.finish(exit_code=0 if status == "completed" else 1)
    return summary


COMMAND = Command("scaling.train", "run", usage="train one run; -m a=1,2 b=x,y trains the grid as a sweep.\n"
                  "  python -m scaling.train [overrides, e.g. structure=btt model.width=256]\n"
                  "  python -m scaling.train -m structure=dense,btt model.width=64,128 [cluster=slurm] [dry_run=true]")


def main(argv: list[str] | None = None) -> int:
    return run_command(COMMAND, sys.argv[1:] if argv is None else argv, train_command, multirun=multirun)


def train_command(overrides: list[str]) -> int:
    """`python -m scaling.train key=value ...`: one run, its outcome in one line."""
    try:
        summary = train(compose_run_config(overrides))
    except (ConfigError, RunFileError) as err:
        print(f"error: {describe_error(err)}", file=sys.stderr)
        return 2
    if "skipped" in summary:
        return 0
    print(f"run {summary['run_id']}: {summary['status']}, final val loss {summary.get('final_val_loss')}, "
          f"{summary.get('tokens')} {summary.get('unit')}s, {summary.get('flops', 0):.3g} FLOPs")
    return 0 if summary["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
