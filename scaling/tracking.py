"""wandb logging: mode from config or environment (never hard-coded), resumable by a stored run id."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from scaling.config import LoggerConfig

MODES = ("online", "offline", "disabled")


def wandb_mode(cfg: LoggerConfig) -> str:
    """logger.mode if set, else $WANDB_MODE, else offline (safe on machines with no network or key)."""
    mode = cfg.mode or os.environ.get("WANDB_MODE") or "offline"
    if mode not in MODES:
        raise ValueError(f"logger.mode={mode!r} is not valid; choose one of {MODES} (or set WANDB_MODE)")
    return mode


class Tracker:
    """A thin wrapper so the training loop never touches wandb directly (and never when disabled)."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, wandb_id: str, name: str, group: str | None,
                 config: dict[str, Any], tags: list[str]):
        self.mode = wandb_mode(cfg)
        self.run = None
        if self.mode == "disabled":
            return
        import wandb

        self.run = wandb.init(
            mode=self.mode, project=cfg.project, entity=cfg.entity, group=cfg.group or group,
            name=cfg.name or name, tags=list(cfg.tags) + tags, config=config, id=wandb_id,
            resume="allow", dir=str(run_dir), settings=wandb.Settings(console="off", silent=True),
        )

    def log(self, row: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in row.items() if k not in ("kind", "step")}, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def wandb_run_id(run_id: str) -> str:
    """The wandb run id of a run: its run id, so every restart (before or after a checkpoint) resumes the one wandb
    run of its directory instead of starting an orphan."""
    return run_id


def import_wandb_under(folder: Path) -> None:
    """Import wandb with `folder` as the temp root: at import it makes two temp dirs (wandb-media, wandb-artifacts)
    that only a clean exit removes, so a killed run leaves them in the run's own wandb/ folder (cleaned on its next
    start by scaling.run_files.remove_temp_files), never in /tmp."""
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    previous, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        import wandb  # noqa: F401
    finally:
        tempfile.tempdir = previous
