"""A sweep's manifest, `<results_root>/sweeps/<name>.json`: the launcher writes it, scaling.status and the analysis
read it.

It lists the sweep's runs (id, description, training FLOPs, estimated seconds where known), the run overrides of
its launch command line and every job submitted for it. Manifests of older launchers lack `flops`, `seconds`,
`overrides`, `jobs` or `updated`, and some give each run its `variant`; all of them load.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling.store.results import atomic_write_json


class ManifestError(ValueError):
    """A manifest that cannot be read; the message names the file and what is wrong."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: not a readable sweep manifest ({problem})")
        self.path = path


@dataclass(frozen=True)
class ManifestRun:
    """One run of a sweep."""

    run_id: str
    label: str | None = None  # the planned run's description: its variant, then its axis values and budget
    flops: float | None = None  # training FLOPs (they weight progress bars); None in older manifests
    variant: str | None = None  # the sweep variant, in some older manifests only (else the label's first word)
    seconds: float | None = None  # estimated wall seconds (scaling.launch.throughput), where the launcher knew them

    @property
    def variant_name(self) -> str | None:
        """The run's sweep variant (`btt_r4`)."""
        return self.variant or (self.label.split()[0] if self.label else None)

    def to_json(self) -> dict[str, Any]:
        entry = {"run_id": self.run_id, "label": self.label, "flops": self.flops}
        return entry | ({"variant": self.variant} if self.variant is not None else {}) | (
            {"seconds": self.seconds} if self.seconds is not None else {})


@dataclass(frozen=True)
class Manifest:
    """A sweep after its latest launch: its runs, that launch's run overrides and the jobs of every launch."""

    name: str
    runs: tuple[ManifestRun, ...]
    overrides: tuple[str, ...] = ()
    jobs: tuple[str, ...] = ()
    updated: float | None = None  # time.time() of the latest launch

    @staticmethod
    def path(results_root: str | os.PathLike, name: str) -> Path:
        return _sweeps_dir(results_root) / f"{name}.json"

    @staticmethod
    def paths(results_root: str | os.PathLike) -> list[Path]:
        """Every manifest under results_root, sorted."""
        return sorted(_sweeps_dir(results_root).glob("*.json"))

    def write(self, results_root: str | os.PathLike) -> Path:
        """Write atomically (temp file, fsync, rename) to Manifest.path; return the path."""
        path = self.path(results_root, self.name)
        atomic_write_json(path, self.to_json())
        return path

    @classmethod
    def read(cls, path: Path) -> Manifest | None:
        """The manifest at `path`; None if there is none, ManifestError if it cannot be read."""
        try:
            obj = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:  # bad JSON or bad UTF-8
            raise ManifestError(path, "not JSON") from None
        return cls.from_json(obj, path)

    @classmethod
    def from_json(cls, obj: Any, path: Path) -> Manifest:
        """A manifest from its JSON object, checked field by field (a missing name is the file's stem)."""
        if not isinstance(obj, dict):
            raise ManifestError(path, f"a JSON {type(obj).__name__}, not an object")
        runs = obj.get("runs")
        if not (isinstance(runs, list) and all(isinstance(r, dict) and isinstance(r.get("run_id"), str)
                                               for r in runs)):
            raise ManifestError(path, "`runs` is not a list of objects with a string run_id")
        entries = []
        for r in runs:
            label, flops, variant, seconds = r.get("label"), r.get("flops"), r.get("variant"), r.get("seconds")
            if not (_optional(label, str) and _optional(variant, str) and _optional(flops, int, float)
                    and _optional(seconds, int, float)):
                raise ManifestError(path, f"run {r['run_id']}: label, variant, flops or seconds of the wrong type")
            entries.append(ManifestRun(r["run_id"], label, flops, variant, seconds))
        name, updated = obj.get("name") or path.stem, obj.get("updated")
        overrides, jobs = obj.get("overrides", []), obj.get("jobs", [])
        if not (isinstance(name, str) and _optional(updated, int, float) and _strings(overrides) and _strings(jobs)):
            raise ManifestError(path, "name, overrides, jobs or updated of the wrong type")
        return cls(name, tuple(entries), tuple(overrides), tuple(jobs), updated)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "overrides": list(self.overrides), "updated": self.updated,
                "runs": [r.to_json() for r in self.runs], "jobs": list(self.jobs)}


def _sweeps_dir(results_root: str | os.PathLike) -> Path:
    return Path(results_root).resolve() / "sweeps"


def _optional(value: Any, *types: type) -> bool:
    return value is None or (isinstance(value, types) and not isinstance(value, bool))


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
