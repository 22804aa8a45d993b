"""One training run's identity, process setup and the files it writes (rank 0 writes; every rank trains)."""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import Any

import torch
from omegaconf import DictConfig

from scaling.train.device import pick_device
from scaling.train.distributed import DistInfo, setup_distributed
from scaling.config.labels import run_label
from scaling.train.plan import RunPlan, plan_run
from scaling.process import keep_freed_memory
from scaling.store.results import (
    append_jsonl, atomic_write_bytes, atomic_write_json, jsonl_bytes, read_jsonl, run_dir, write_summary,
)
from scaling.store.paths import RunPaths
from scaling.store.summary import Summary

logger = logging.getLogger(__name__)


class Run:
    """State and bookkeeping of one training run: its plan, directory, process group and pending metric rows."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
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
        torch.set_num_threads(self.cfg.train.threads)  # per process (each DDP rank), part of the run's identity
        keep_freed_memory()  # activations are reallocated every step (scaling/process.py)

    def heartbeat(self, every_s: float = 30.0) -> None:
        """Tell launchers this run is alive (scaling.launch leaves runs with a fresh heartbeat alone)."""
        now = time.time()
        if self.dist.is_main and now - self.last_beat >= every_s:
            atomic_write_json(self.paths.heartbeat, {"time": now, "host": socket.gethostname(), "pid": os.getpid()})
            self.last_beat = now

    def consumed(self, step: int) -> dict[str, float]:
        """Training units and FLOPs consumed after `step` optimiser steps."""
        p = self.plan
        return {"tokens": step * p.units_per_step, "flops": step * p.units_per_step * p.train_flops_per_unit}

    # --- files -----------------------------------------------------------------------------------
    def write_summary(self, **values: Any) -> Summary:
        """summary.json: the run's plan, then `values` (status, totals so far, ...)."""
        p, cfg = self.plan, self.cfg
        summary = Summary(
            run_id=p.run_id, sweep=cfg.sweep, label=run_label(cfg), family=p.family, structure=p.structure,
            width=p.width, depth=cfg.model.depth, parametrization=cfg.model.parametrization,
            lr=cfg.train.lr, seed=cfg.train.seed, unit=p.unit, params=p.params,
            params_nonembed=p.params_nonembed, forward_flops_per_token=p.forward_flops_per_unit,
            train_flops_per_token=p.train_flops_per_unit, tokens_target=p.units, steps_target=p.steps,
            batch_size=cfg.train.batch_size, schedule=cfg.train.schedule,
        ) | values
        if self.dist.is_main:
            write_summary(self.dir, summary)
        return summary

    def log(self, row: dict[str, Any]) -> None:
        """Queue a metrics row (written by the next flush)."""
        self.pending_rows.append(row)

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
            logger.warning(f"warning: {path}: {len(lost)} evaluation row(s) before the checkpoint's step "
                           f"{last_step} are missing (steps {lost[:5]}); the run resumes with gaps in its curve: "
                           f"delete {self.dir} to retrain it whole")
