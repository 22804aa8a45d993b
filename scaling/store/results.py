"""Run identity, run directories, the results root's checks and the results table.

A run is a pure function of the identity sections of its resolved config (model, structure, data, train);
the SHA-256 of their canonical JSON is its id and its directory name: `<results_root>/runs/<run_id>/`.

A run directory is the source of truth and holds (file names: scaling.store.paths.RunPaths):
  config.yaml     the resolved config (secrets never appear: configs hold no credentials)
  metrics.jsonl   one JSON object per line; `kind` is "train" or "eval" (schema below)
  summary.json    written atomically at the end (and with status "running" at start)
  checkpoint.pt   latest checkpoint (atomic replace)
  lease.json      the process training it now (scaling.store.lease), with heartbeat.json while it trains

metrics.jsonl rows:
  train: {kind, step, tokens, flops, loss, lr, tokens_per_s, flops_per_s, wall_s}
  eval:  {kind, step, tokens, flops, val_loss, wall_s}  (+ val_accuracy for classification)
summary.json keys: scaling.store.summary.Summary; a run's states: scaling.store.states.RunState.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from scaling.config.schema import resolve_device

from scaling.store.files import RunFileError, read_config_file, read_metrics_file, read_summary_file
from scaling.store.paths import RunPaths
from scaling.store.states import FINISHED_STATES, SUMMARY_STATES, in_order
from scaling.store.summary import SUMMARY_KEYS, Summary

IDENTITY_SECTIONS = ("model", "structure", "data", "train")
# Settings that change how a run is observed or where it runs, not what it computes: excluded from its identity.
# Everything else in the identity sections is in the id (tests/test_run_id.py changes each field and checks).
UNSET_IDENTITY_KEYS = {"snapshot_steps": [], "fork_from": None}  # train settings in the id only when set
NON_IDENTITY_KEYS = {
    "data": ("cache_dir",),  # where the prepared data is cached; the data itself is named by kind/name/path/...
    # train-row spacing; resume is bit-exact; extra evaluations at smaller sweep budgets (read-only)
    "train": ("log_every", "checkpoint_every_s", "eval_flops"),
}


def identity(cfg: DictConfig | dict, cuda: bool | None = None) -> dict[str, Any]:
    """The part of a resolved config that defines what a run computes. A device or precision still `auto` is
    taken as this machine would resolve it (a launcher resolves it for its cluster's machines first), or as a
    machine with (`cuda` True) or without CUDA would."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    cuda = torch.cuda.is_available() if cuda is None else cuda
    ident = {}
    for section in IDENTITY_SECTIONS:
        values = dict(container[section])
        for key in NON_IDENTITY_KEYS.get(section, ()):
            values.pop(key, None)
        ident[section] = values
    train = ident["train"]
    for key, unset in UNSET_IDENTITY_KEYS.items():  # a cooldown setting left unset is not part of the id: ids
        if train.get(key, unset) == unset:  # from before cooldown branches existed stay the same
            train.pop(key, None)
    if "device" in train and "precision" in train:  # both change the numbers: part of the id, `auto` resolved
        device, train["precision"] = resolve_device(train["device"], train["precision"], cuda)
        train["device"] = str(device).split(":")[0]  # cpu or cuda computes differently; which CUDA device does not
    return ident


def run_id(cfg: DictConfig | dict, cuda: bool | None = None) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON of the run's identity (`cuda`: as for identity)."""
    blob = json.dumps(identity(cfg, cuda), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class DirectoryError(ValueError):
    """A results root (or output folder) that cannot be used; the message names the path and the fix."""


# Why a file cannot be written, by errno, and what to do about it (`{field}` is the setting that names the folder).
WRITE_FIXES = {
    errno.ENOSPC: "the disk is full: free space there or set {field}=DIR to a folder on another disk",
    errno.EDQUOT: "the disk quota is used up: free space there or set {field}=DIR to a folder on another disk",
    errno.EROFS: "the filesystem is read-only: set {field}=DIR to a writable folder",
    errno.EPERM: "writing is not permitted (chattr +i?): lift it (chattr -i) or set {field}=DIR to a writable folder",
    errno.EACCES: "no permission to write there: fix its permissions or set {field}=DIR to a writable folder",
    errno.ENOTDIR: "a part of the path is a file: set {field}=DIR to a folder",
}


def write_error(err: OSError, field: str = "results_root") -> str | None:
    """One line for an OSError of writing a file (disk full, read-only, not permitted): the file and the fix;
    None for any other error (a bug, shown as a traceback)."""
    fix = WRITE_FIXES.get(err.errno)
    if fix is None or not err.filename:
        return None
    return f"{err.filename}: {err.strerror}; {fix.format(field=field)}"


def checked_root(results_root: str | os.PathLike | None, write: bool, field: str = "results_root") -> Path:
    """`results_root` resolved; DirectoryError when it is empty, is a file or lies under one, or (`write`) when no
    file can be written where its runs would go (read-only, immutable or full: a probe file is written and removed).
    Nothing is created."""
    text = os.fspath(results_root) if results_root is not None else ""
    if not text.strip():
        raise DirectoryError(f"{field}={text!r} is empty; set {field}=DIR to the folder for the results")
    try:
        root = Path(text).expanduser().resolve()
        existing = next(p for p in (root, *root.parents) if p.exists())
    except (OSError, RuntimeError) as err:  # a symlink loop, a name too long, ~user of no such user
        reason = getattr(err, "strerror", None) or str(err)
        raise DirectoryError(f"{field}={text} cannot be used as a folder ({reason}); set {field}=DIR to a "
                             "folder path") from None
    if not existing.is_dir():
        where = "is a file" if existing == root else f"lies under {existing}, which is a file"
        raise DirectoryError(f"{field}={root} {where}, not a folder; set {field}=DIR to a folder (or move the file)")
    runs = root / "runs"
    if runs.exists() and not runs.is_dir():
        raise DirectoryError(f"{field}={root}: {runs} is a file, not the folder of runs; move the file, or set "
                             f"{field}=DIR to another folder")
    if write:
        _probe(existing, root, field)
    return root


def _probe(folder: Path, root: Path, field: str) -> None:
    """Write, fsync and remove a small file in `folder`: a full, read-only or immutable folder fails here."""
    probe = folder / f".write-probe.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as err:
        raise DirectoryError(_cannot_write(root, folder, err, field)) from None
    try:
        os.write(fd, b"probe\n")
        os.fsync(fd)
    except OSError as err:
        raise DirectoryError(_cannot_write(root, folder, err, field)) from None
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def _cannot_write(root: Path, folder: Path, err: OSError, field: str) -> str:
    where = "" if folder == root else f" (in {folder}, where it would be created)"
    fix = WRITE_FIXES.get(err.errno, "set {field}=DIR to a writable folder").format(field=field)
    return f"{field}={root}: cannot write a file there{where}: {err.strerror}; {fix}"


def runs_dir(results_root: str | os.PathLike) -> Path:
    return Path(results_root).resolve() / "runs"


def run_dir(results_root: str | os.PathLike, rid: str) -> Path:
    """Directory of run `rid`; the id is checked to be a plain hex digest so no path can escape the root."""
    if not (len(rid) == 16 and all(c in "0123456789abcdef" for c in rid)):
        raise ValueError(f"run id {rid!r} is not a 16-digit hex digest")
    return runs_dir(results_root) / rid


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`.

    The temp file is created with mode 0666 less the umask (0644 by default), like any plain file, so
    collaborators on a shared filesystem can read results; mkstemp's 0600 would lock them out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as err:  # named by the file it was for, not the temp file
        raise OSError(err.errno, err.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file that can be rebuilt (progress reports, caches); None if absent or unreadable."""
    try:
        obj = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):  # ValueError: bad JSON or bad UTF-8
        return None
    return obj if isinstance(obj, dict) else None


def jsonl_bytes(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True, default=float) + "\n" for r in rows).encode()


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append whole lines with one write + fsync; a reader skips a torn last line (see read_jsonl)."""
    if not rows:
        return
    data = jsonl_bytes(rows)
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete rows; a partial last line (a crash mid-write) is ignored, any other bad line raises
    scaling.store.files.RunFileError naming the file and the fix."""
    return read_metrics_file(path)


def iter_run_dirs(results_root: str | os.PathLike) -> Iterator[Path]:
    root = runs_dir(results_root)
    if root.is_dir():
        yield from sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_summary(rdir: Path) -> Summary | None:
    """The run's summary.json, once its files are checked; None before the run wrote one. RunFileError (the file and
    the fix) when the run cannot be used: summary.json unreadable, a field of it unusable or another run's
    (scaling.store.files.read_summary_file), config.yaml not the config of this run (its settings hash to another id:
    edited), or a finished run's config.yaml or metrics.jsonl missing or empty."""
    paths = RunPaths(rdir)
    summary = read_summary_file(paths.summary, rdir.name)
    config = read_config_file(paths.config)
    if config is not None and not config_matches(config, rdir.name):
        raise RunFileError(paths.config, f"its settings are not those of run {rdir.name} (edited since the run "
                           "started, or written by another version of the harness)", "restore the file, or delete "
                           f"the run directory {rdir} to retrain the run")
    if summary is not None and summary["status"] in FINISHED_STATES:
        for path in (paths.config, paths.metrics):
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                size = None
            if not size:
                raise RunFileError(path, f"{'empty' if size == 0 else 'missing'}, but the run has "
                                   f"{summary['status']}", f"delete the run directory {rdir} to retrain the run")
    return summary


def config_matches(config: dict[str, Any], rid: str) -> bool:
    """Whether config.yaml's settings hash to `rid` (a device still `auto` as on a machine with or without CUDA,
    so that any machine can check a run trained on another)."""
    try:
        return rid in {run_id(config, cuda) for cuda in (False, True)}
    except (KeyError, TypeError, ValueError, AttributeError):  # a section missing or not a mapping
        return False


def write_summary(rdir: Path, summary: Summary) -> None:
    """Write the run's summary.json atomically; a key Summary does not define, or a status it does not allow, is a
    bug and is refused."""
    unknown = sorted(set(summary) - set(SUMMARY_KEYS))
    if unknown:
        raise ValueError(f"summary keys {unknown} are not defined in scaling.store.summary.Summary")
    if summary.get("status") not in SUMMARY_STATES:
        raise ValueError(f"summary status {summary.get('status')} is not one of {in_order(SUMMARY_STATES)}")
    atomic_write_json(RunPaths(rdir).summary, summary)
