"""Every file convention of one run directory, in one place (as submitit's JobPaths is for a job).

    paths = RunPaths(run_dir(results_root, run_id))
    paths.config, paths.metrics, paths.summary, paths.checkpoint, paths.lease, paths.heartbeat, paths.progress,
    paths.wandb, paths.snapshot(step)

What each file holds: scaling/store/results.py's module docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    """The files of the run directory `dir`."""

    dir: Path

    @property
    def config(self) -> Path:
        """config.yaml: the resolved config, written once when the run starts."""
        return self.dir / "config.yaml"

    @property
    def metrics(self) -> Path:
        """metrics.jsonl: one train or eval row per line."""
        return self.dir / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        """summary.json: status and totals, written atomically."""
        return self.dir / "summary.json"

    @property
    def checkpoint(self) -> Path:
        """checkpoint.pt: the latest checkpoint (atomic replace)."""
        return self.dir / "checkpoint.pt"

    @property
    def lease(self) -> Path:
        """lease.json: the process training the run now (scaling.store.lease)."""
        return self.dir / "lease.json"

    @property
    def heartbeat(self) -> Path:
        """heartbeat.json: refreshed while the run trains."""
        return self.dir / "heartbeat.json"

    @property
    def progress(self) -> Path:
        """progress.json: the latest progress report (scaling.train.progress)."""
        return self.dir / "progress.json"

    def snapshot(self, step: int) -> Path:
        """snapshots/step_<N>.pt: a checkpoint kept at step N, where cooldown branches fork (train.snapshot_steps)."""
        return self.dir / "snapshots" / f"step_{step}.pt"

    @property
    def wandb(self) -> Path:
        """wandb/: the offline wandb run files (scaling.train.tracking)."""
        return self.dir / "wandb"
