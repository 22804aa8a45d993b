"""Synthetic sweeps drawn from known scaling laws, written as real run directories.

They exercise the whole pipeline without training: tests check that each fit recovers the law that made
the data, and bench/analysis.py times a report over thousands of runs. `records()` gives the runs in
memory (for `load.table_from_records`), `write()` as run directories (for `load.load_results`). The data follow

    L(N, D) = E + A / N^alpha + B / D^beta,   times exp(run offset + per-evaluation noise),

so the true frontier is L*(C) = E + K C^(-alpha beta/(alpha+beta)) and N*(C) grows as C^(beta/(alpha+beta)).
Each run's evaluation at t tokens reads L(N, t), as a constant-learning-rate run would (the runs record
schedule `constant`), at t x F_tok x seconds_per_flop seconds of training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from analysis.io.load import RunRecord
from scaling.store.results import append_jsonl, atomic_write_bytes, run_dir, run_id, write_summary
from scaling.store.paths import RunPaths
from scaling.store.states import RunState


@dataclass(frozen=True)
class Law:
    """L(N, D) = E + A / N^alpha + B / D^beta with C = 6 N D."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, n: np.ndarray | float, d: np.ndarray | float) -> np.ndarray:
        return self.E + self.A / np.asarray(n, float) ** self.alpha + self.B / np.asarray(d, float) ** self.beta

    @property
    def a(self) -> float:
        """Exponent of N*(C): beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def frontier_exponent(self) -> float:
        """Exponent of L*(C) - E: alpha beta / (alpha + beta)."""
        return self.alpha * self.beta / (self.alpha + self.beta)

    def n_opt(self, flops: np.ndarray | float) -> np.ndarray:
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        return g * (np.asarray(flops, float) / 6) ** self.a

    def frontier(self, flops: np.ndarray | float) -> np.ndarray:
        n = self.n_opt(flops)
        return self.loss(n, np.asarray(flops, float) / (6 * n))


HOFFMANN = Law(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


@dataclass(frozen=True)
class SyntheticStructure:
    """A structure's law and how its raw parameter count relates to its effective one (FLOPs/token / 6)."""

    name: str
    law: Law
    params_ratio: float = 1.0  # raw params / N_eff (below 1 for weight sharing, e.g. Kronecker)
    theta: tuple[float, ...] | None = None  # einsum only
    lr_drift: float = 0.0  # d log(lr*) / d log(width) under this structure's parametrization
    label: str | None = None  # the sweep variant (default: the structure's name)
    seconds_per_flop: float = 1e-9  # measured training time per FLOP (structured layers run less efficiently)

    @property
    def key(self) -> str:
        return self.label or self.name


@dataclass
class SyntheticSweep:
    """An isoFLOP sweep per structure, optional repeated seeds, an LR sweep and some diverged runs."""

    structures: Sequence[SyntheticStructure]
    budgets: Sequence[float] = tuple(1e13 * 2.0 ** k for k in range(7))
    sizes_per_budget: int = 7
    size_step: float = 2.0  # ratio between neighbouring N_eff
    sigma_run: float = 0.006  # seed-to-seed noise of log-loss (a per-run offset)
    sigma_eval: float = 0.002  # per-evaluation noise of log-loss
    eval_points: int = 8
    repeat_seeds: int = 2  # seeds for the configs at the centre of each budget's grid
    lr_widths: Sequence[int] = ()  # widths of an LR sweep (empty: none)
    lrs: Sequence[float] = tuple(3e-3 * 2.0 ** k for k in range(-3, 4))
    lr_tokens: float = 2e6
    lr_seeds: int = 1  # seeds per point of the LR sweep
    diverged: int = 2  # runs per structure recorded as diverged (excluded with a note)
    family: str = "gpt2"
    data: str = "shakespeare"
    name: str = "synthetic"  # the sweep's name
    depth: int = 4
    seed: int = 0

    def width_for(self, n_eff: float) -> int:
        """GPT-like N_eff ~= 12 depth width^2."""
        return max(8, int(round(math.sqrt(n_eff / (12 * self.depth)))))

    def records(self) -> list[RunRecord]:
        """Every run of the sweep as a run record (summary, resolved config, metric rows), in memory."""
        rng = np.random.default_rng(self.seed)
        out: list[RunRecord] = []
        for s in self.structures:
            for c in self.budgets:
                centre = math.log(s.law.n_opt(c), self.size_step) + rng.uniform(-0.5, 0.5)
                offsets = np.arange(self.sizes_per_budget) - (self.sizes_per_budget - 1) / 2
                for k in offsets:
                    n_eff = self.size_step ** (round(centre) + k)
                    for seed in range(self.repeat_seeds if abs(k) < 1 else 1):
                        out.append(self._run(rng, s, n_eff, c / (6 * n_eff), 3e-3, seed))
            for width in self.lr_widths:
                lr_star = 3e-3 * (width / self.lr_widths[0]) ** s.lr_drift
                for lr in self.lrs:
                    for seed in range(self.lr_seeds):
                        out.append(self._run(rng, s, 12 * self.depth * width ** 2, self.lr_tokens, lr, seed,
                                             lr_star))
            for k in range(self.diverged):
                out.append(self._run(rng, s, 2e6, 1e7, 3e-3 * 64, 100 + k, status=RunState.DIVERGED))
        ids = [r.run_id for r in out]
        if len(set(ids)) != len(ids):
            raise ValueError("synthetic sweep: two runs share one config; change the budgets or lrs")
        return out

    def write(self, results_root: Path) -> list[str]:
        """Write every run as a run directory under results_root (as the trainer would); returns the run ids."""
        for rec in (records := self.records()):
            rdir = run_dir(results_root, rec.run_id)
            rdir.mkdir(parents=True)
            paths = RunPaths(rdir)
            atomic_write_bytes(paths.config, yaml.safe_dump(rec.config, sort_keys=False).encode())
            append_jsonl(paths.metrics, rec.metrics)
            write_summary(rdir, rec.summary)
        return [r.run_id for r in records]

    def _run(self, rng: np.random.Generator, s: SyntheticStructure, n_eff: float, tokens: float, lr: float,
             seed: int, lr_star: float | None = None, status: RunState = RunState.COMPLETED) -> RunRecord:
        width = self.width_for(n_eff)
        parametrization = "structure_aware" if s.lr_drift == 0 else "naive"
        config = {
            "model": {"family": self.family, "width": width, "depth": self.depth, "parametrization": parametrization},
            "structure": {"name": s.name, "theta": list(s.theta) if s.theta else None,
                          "variant": s.key},
            "data": {"name": self.data},
            "train": {"tokens": int(tokens), "lr": float(lr), "seed": int(seed), "flops": float(6 * n_eff * tokens),
                      "schedule": "constant"},
            "sweep": self.name, "label": s.key,
        }
        rid = run_id(config)
        ftok = 6 * n_eff
        evals = tokens * np.geomspace(1 / 32, 1, self.eval_points)
        offset = rng.normal(0, self.sigma_run)
        # An lr away from lr* costs 2% of the loss per octave squared.
        penalty = 1.0 if lr_star is None else 1 + 0.02 * math.log2(lr / lr_star) ** 2
        losses = s.law.loss(n_eff, evals) * penalty * np.exp(offset + rng.normal(0, self.sigma_eval, evals.size))
        if status == RunState.DIVERGED:
            losses = losses[: self.eval_points // 2]
        rows = [{"kind": "eval", "step": int(i + 1) * 100, "tokens": float(t), "flops": float(ftok * t),
                 "val_loss": float(v), "wall_s": float(ftok * t * s.seconds_per_flop)}
                for i, (t, v) in enumerate(zip(evals, losses))]
        done = status == RunState.COMPLETED
        reached = float(tokens if done else evals[len(losses) - 1])
        summary = {
            "run_id": rid, "status": status, "sweep": self.name, "label": s.key, "schedule": "constant",
            "family": self.family, "structure": s.name,
            "width": width, "depth": self.depth, "parametrization": parametrization, "lr": float(lr), "seed": seed,
            "params": n_eff * s.params_ratio, "params_nonembed": n_eff * s.params_ratio,
            "forward_flops_per_token": 2 * n_eff, "train_flops_per_token": ftok,
            "tokens": reached, "tokens_target": float(tokens), "flops": ftok * reached,
            "final_val_loss": float(losses[-1]) if done else None,
            "best_val_loss": float(losses.min()), "wall_time_s": float(ftok * reached * s.seconds_per_flop),
            "steps": len(losses) * 100,
        }
        return RunRecord(rid, summary, config, rows, f"synthetic:{rid}")


@dataclass
class FixedEpochSweep:
    """CBS's MLP protocol drawn from known curves: every width trains the same examples with a decaying LR, so
    each run is one point L = E + A (k_l C)^-alpha x exp(seed noise) of its label's curve, C its training FLOPs.
    The train rows hold that loss over the run's last steps; the evaluations read `val_gap` above it."""

    multipliers: dict[str, float]  # label -> k (the reference's is 1)
    n_effs: Sequence[float] = tuple(1e4 * 2.0 ** k for k in range(7))
    tokens: float = 1.2e6
    E: float = 0.2
    A: float = 700.0
    alpha: float = 0.3
    sigma_run: float = 0.01  # seed-to-seed noise of log-loss
    seeds: int = 2
    val_gap: float = 0.05
    lr_check: Sequence[float] = ()  # other lrs at the middle size (seed 0), each 5% worse
    name: str = "fixed"
    seed: int = 0

    def loss(self, label: str, flops: float) -> float:
        return self.E + self.A * (self.multipliers[label] * flops) ** -self.alpha

    def records(self) -> list[RunRecord]:
        rng = np.random.default_rng(self.seed)
        out = []
        for label in self.multipliers:
            for i, n_eff in enumerate(self.n_effs):
                for seed in range(self.seeds):
                    out.append(self._run(label, n_eff, 3e-3, seed, rng.normal(0, self.sigma_run)))
                if i == len(self.n_effs) // 2:
                    out += [self._run(label, n_eff, lr, 0, math.log(1.05)) for lr in self.lr_check]
        return out

    def _run(self, label: str, n_eff: float, lr: float, seed: int, offset: float) -> RunRecord:
        ftok, steps = 6 * n_eff, 100
        flops = ftok * self.tokens
        loss = self.loss(label, flops) * math.exp(offset)
        config = {"model": {"family": "mlp", "width": int(n_eff // 100), "depth": 3,
                            "parametrization": "structure_aware"},
                  "structure": {"name": label}, "data": {"name": "fashion_mnist"},
                  "train": {"tokens": int(self.tokens), "lr": lr, "seed": seed, "schedule": "cosine"},
                  "sweep": self.name, "label": label}
        rid = run_id(config)
        rows = [{"kind": "train", "step": k, "tokens": self.tokens * k / steps, "flops": flops * k / steps,
                 "loss": loss * (1 + max(0.0, 0.9 - k / steps))} for k in range(1, steps + 1)]
        rows.append({"kind": "eval", "step": steps, "tokens": self.tokens, "flops": flops,
                     "val_loss": loss + self.val_gap, "wall_s": flops * 1e-9})
        summary = {"run_id": rid, "status": RunState.COMPLETED, "sweep": self.name, "label": label,
                   "schedule": "cosine", "family": "mlp", "structure": label, "width": int(n_eff // 100),
                   "depth": 3, "parametrization": "structure_aware", "lr": lr, "seed": seed, "params": n_eff,
                   "params_nonembed": n_eff,
                   "forward_flops_per_token": 2 * n_eff, "train_flops_per_token": ftok, "tokens": self.tokens,
                   "tokens_target": self.tokens, "flops": flops, "final_val_loss": loss + self.val_gap,
                   "best_val_loss": loss + self.val_gap, "wall_time_s": flops * 1e-9, "steps": steps}
        return RunRecord(rid, summary, config, rows, f"synthetic:{rid}")
