"""Strict readers of one run's files: a corrupt file is that run's problem, reported in one line with the fix.

Every reader raises RunFileError naming the file, what is wrong with it and what to do; callers that look at many
runs (status, launch, the analysis loader) report that run and carry on with the rest. A missing file is not an
error (the run has not written it yet); a torn last line of metrics.jsonl (a crash mid-append) is skipped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from scaling.store.states import SUMMARY_STATES, in_order
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


_NUMBER, _TEXT = (int, float), (str,)
SUMMARY_TYPES = {**dict.fromkeys(("params", "width", "tokens", "flops", "final_val_loss", "steps",
                                  "train_flops_per_token"), _NUMBER),
                 **dict.fromkeys(("run_id", "sweep", "label", "family", "structure", "schedule"), _TEXT)}
SUMMARY_TYPE_WORDS = {_NUMBER: "a number", _TEXT: "a string"}  # what the report reads from a summary


def read_summary_file(path: Path) -> Summary | None:
    """summary.json as a dict with a known status; None when the run has not written one yet."""
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
    for key, value in summary.items():
        kind = SUMMARY_TYPES.get(key)
        if kind is not None and value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise RunFileError(path, f"{key} holds {json.dumps(value)[:40]}, not {SUMMARY_TYPE_WORDS[kind]}", fix)
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
