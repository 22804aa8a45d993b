"""Strict readers of one run's files: a corrupt file is that run's problem, reported in one line with the fix.

Every reader raises RunFileError naming the file, what is wrong with it and what to do; callers that look at many
runs (status, launch, the analysis loader) report that run and carry on with the rest. A missing file is not an
error (the run has not written it yet); a torn last line of metrics.jsonl (a crash mid-append) is skipped.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import yaml

from scaling.store.states import FINISHED_STATES, SUMMARY_STATES, RunState, in_order
from scaling.store.summary import Summary

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class RunFileError(ValueError):
    """A run file that cannot be used; the message names the file and the fix."""

    def __init__(self, path: Path, problem: str, fix: str):
        super().__init__(f"{path}: {problem}; {fix}")
        self.path = path


def _retrain_fix(path: Path) -> str:
    return f"delete the run directory {path.parent} to retrain the run, or restore the file"


def _text(path: Path, fix: str) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise RunFileError(path, "is a directory, not a file", fix) from None
    except OSError as err:  # no permission, a run directory that is a file, an I/O error
        raise RunFileError(path, f"cannot be read ({err.strerror})", fix) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RunFileError(path, f"not UTF-8 text (byte {err.start})", fix) from None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# What the report, status and `scaling.train` read from a summary: each key's check and what it must hold. Tokens
# and FLOPs are 0 when a run starts; any of these may be null in a summary that does not need it (FINISHED_KEYS).
_POSITIVE = (lambda v: _number(v) and v > 0, "a positive number")
_COUNT = (lambda v: _number(v) and v >= 0, "a number >= 0")
_NAME = (lambda v: isinstance(v, str) and v != "", "a non-empty string")
SUMMARY_FIELDS = {**dict.fromkeys(("params", "width", "final_val_loss", "steps", "train_flops_per_token",
                                   "tokens_per_s"), _POSITIVE),
                  **dict.fromkeys(("tokens", "flops"), _COUNT),
                  **dict.fromkeys(("run_id", "sweep", "label", "family", "structure", "schedule"), _NAME)}
# What the trainer writes in every finished run's summary (a completed run's final_val_loss too).
FINISHED_KEYS = ("run_id", "label", "family", "structure", "width", "params", "train_flops_per_token", "tokens",
                 "flops", "steps", "schedule")


def read_summary_file(path: Path, run_id: str | None = None) -> Summary | None:
    """summary.json as a dict with a known status and usable fields (SUMMARY_FIELDS, FINISHED_KEYS), of run `run_id`
    when given; None when the run has not written one yet."""
    fix = f"delete {path.name} to let the next launch resume the run from its checkpoint (or retrain it)"
    text = _text(path, fix)
    if text is None:
        return None
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as err:
        raise RunFileError(path, f"not valid JSON ({err.msg} at line {err.lineno})", fix) from None
    if not isinstance(summary, dict):
        raise RunFileError(path, f"holds a JSON {type(summary).__name__}, not an object", fix)
    status = summary.get("status")
    if not (isinstance(status, str) and status in SUMMARY_STATES):
        raise RunFileError(path, f"status {status!r} is not one of {in_order(SUMMARY_STATES)}", fix)
    for key, (usable, words) in SUMMARY_FIELDS.items():
        value = summary.get(key)
        if value is not None and not usable(value):
            raise RunFileError(path, f"{key} holds {json.dumps(value)[:40]}, not {words}", fix)
    if status in FINISHED_STATES:
        needed = FINISHED_KEYS + (("final_val_loss",) if status == RunState.COMPLETED else ())
        missing = [key for key in needed if summary.get(key) is None]
        if missing:
            raise RunFileError(path, f"has no {', '.join(missing)}, but the run has {status}", fix)
    if run_id is not None and summary.get("run_id") not in (None, run_id):
        raise RunFileError(path, f"run_id holds {json.dumps(summary['run_id'])[:40]}, not the name of its run "
                           f"directory ({run_id}): copied from another run?", fix)
    return summary


def read_metrics_file(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows (each an object with an integer `step`); a torn last line is skipped."""
    fix = _retrain_fix(path)
    text = _text(path, fix)
    if text is None:
        return []
    lines = text.split("\n")
    last = len(lines)  # the text after the final newline: "" or a row cut short by a crash mid-append
    rows = []
    for number, line in enumerate(lines, 1):
        if number == last and not line:
            break
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == last:
                break
            raise RunFileError(path, f"line {number} is not valid JSON", fix) from None
        if not (isinstance(row, dict) and isinstance(row.get("step"), int)):
            raise RunFileError(path, f"line {number} is not a metrics row (an object with an integer step)", fix)
        rows.append(row)
    return rows


def read_config_file(path: Path) -> dict[str, Any] | None:
    """config.yaml as a mapping; None when absent."""
    fix = _retrain_fix(path)
    text = _text(path, fix)
    if text is None:
        return None
    try:
        config = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RunFileError(path, f"not valid YAML{where}", fix) from None
    if not isinstance(config, dict):
        raise RunFileError(path, f"holds a YAML {type(config).__name__}, not a mapping", fix)
    return config


def remove_temp_files(rdir: Path) -> list[Path]:
    """Delete what a killed process leaves: `.NAME.*.tmp` files of atomic writes, and wandb's import-time temp
    dirs (scaling.train.tracking.import_wandb_under). Only the holder of the run's lease calls this (no one else
    writes)."""
    leftovers = sorted([*rdir.glob(".*.tmp"), *rdir.glob("wandb/tmp*wandb-*")])
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return leftovers
