"""wandb logging: mode from config or environment (never hard-coded), resumable by a stored run id.

A run's wandb name and tags carry its label (the sweep variant) and every swept setting; the group is its sweep and
the job type `train`. The wandb config is the run config, sections intact (so runs filter by `structure.rank`), with
`train.tokens` the units the run trains and the run's plan under `plan`. Metrics are grouped `train/...` and
`eval/...`, with `flops` (the default x-axis) and `tokens` logged beside them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from scaling.config.schema import LOGGER_MODES, LoggerConfig
from scaling.config.labels import run_label

MODES = LOGGER_MODES
X_AXES = ("flops", "tokens")  # logged unprefixed with every row: the compute axes plots are drawn against
MAX_TAG_CHARS = 64  # wandb rejects longer tags
JOB_TYPE = "train"  # every run's wandb job type (a filter in the UI)


def run_name(cfg: Mapping[str, Any]) -> str:
    """Name of a run outside a sweep: its label and shape, e.g. `btt_r4 gpt2 d256 L2 2.1e+06tok lr0.003 s0`."""
    m, t = cfg["model"], cfg["train"]
    return f"{run_label(cfg)} {m['family']} d{m['width']} L{m['depth']} {t['tokens']:.3g}tok lr{t['lr']:g} s{t['seed']}"


def run_tags(cfg: Mapping[str, Any]) -> list[str]:
    """Family, structure and label; the Tracker adds logger.tags (where a sweep puts its swept settings)."""
    return list(dict.fromkeys([cfg["model"]["family"], cfg["structure"]["name"], run_label(cfg)]))


def name_sweep_run(cfg: dict[str, Any], axes: Sequence[str]) -> dict[str, Any]:
    """A sweep run's config with its wandb name (`btt_r4 model.width=64 flops=3e+13`, unless logger.name is set)
    and its swept settings as tags; logger settings are not part of a run's identity."""
    logger = cfg["logger"]
    logger["name"] = logger.get("name") or " ".join([run_label(cfg), *axes])
    logger["tags"] = list(dict.fromkeys([*logger.get("tags", []), *axes]))
    return cfg


def wandb_config(cfg: Mapping[str, Any], plan: Mapping[str, Any]) -> dict[str, Any]:
    """The run config as wandb records it: every section kept whole, `train.tokens` replaced by the units the run
    trains (`plan.units`: a FLOP budget or step rounding changes it), the run id, and the plan as one section."""
    config = {key: dict(value) if isinstance(value, Mapping) else value for key, value in cfg.items()}
    config["train"] = {**config["train"], "tokens": int(plan["units"])}
    return config | {"run_id": plan["run_id"], "plan": dict(plan)}


def grouped(row: Mapping[str, Any]) -> dict[str, Any]:
    """A metrics row as wandb keys: `train/loss`, `eval/val_loss`, ... and the x-axes `flops`, `tokens`."""
    prefix = f"{row['kind']}/"
    return {k if k in X_AXES else prefix + k: v for k, v in row.items() if k not in ("kind", "step")}


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
            mode=self.mode, project=cfg.project, entity=cfg.entity, group=cfg.group or group, job_type=JOB_TYPE,
            name=cfg.name or name, tags=list(dict.fromkeys(tag[:MAX_TAG_CHARS] for tag in [*tags, *cfg.tags])),
            config=config, id=wandb_id, resume="allow", dir=str(run_dir),
            settings=wandb.Settings(console="off", silent=True),
        )
        for axis in X_AXES:
            self.run.define_metric(axis, summary="max")
        for group in ("train/*", "eval/*"):
            self.run.define_metric(group, step_metric="flops")

    def log(self, row: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(grouped(row), step=step)

    def summary(self, values: dict[str, Any]) -> None:
        """Values as summary.json holds them: through JSON, so a RunState is its value (`completed`), where wandb
        would write its name (`COMPLETED`)."""
        if self.run is not None:
            self.run.summary.update(json.loads(json.dumps(values)))

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
    start by scaling.store.files.remove_temp_files), never in /tmp."""
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    previous, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        import wandb  # noqa: F401
    finally:
        tempfile.tempdir = previous
