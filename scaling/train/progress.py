"""What a person watching a sweep sees: a line per log step in each job's log, and a launcher bar weighted by time.

A run reports each log step as one INFO log line, `[btt_r4 d64 s0] step ...` (run_tag; on stdout: the job's log
`<results_root>/submitit/<sweep>/<launch>/<job_id>/<job_id>_0_log.out`, scaling.process.log_to_console) and,
every few seconds, in `progress.json` in its run directory; the launcher's bar adds up each run's estimated seconds
(else its training FLOPs) done over the sweep's total, so its ETA follows the time the runs take rather than their
count (runs of one sweep differ in cost by orders of magnitude, and in FLOPs per second several-fold).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from scaling.config.labels import run_label
from scaling.store.results import atomic_write_json, read_json, run_dir
from scaling.store.paths import RunPaths
from scaling.store.states import DONE_STATES, STARTED_STATES, RunState

logger = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """Seconds as a person reads them: `45 s`, `12.5 min`, `130.4 h`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def run_tag(cfg: Mapping[str, Any]) -> str:
    """How a run's log lines name it: its label, width and seed (`btt_r4 d64 s0`), so the runs of a sweep that
    share a label are told apart in a job's log."""
    return f"{run_label(cfg)} d{cfg['model']['width']} s{cfg['train']['seed']}"


class RunProgress:
    """One run's progress reports: a log line per log step, and progress.json at most every `every_s` seconds."""

    def __init__(self, directory: Path, label: str, steps: int, unit: str, enabled: bool, every_s: float = 5.0):
        self.path = RunPaths(directory).progress
        self.label, self.steps, self.unit, self.enabled, self.every_s = label, steps, unit, enabled, every_s
        self.last_write = -float("inf")

    def report(self, step: int, tokens: int, flops: float, loss: float, rate: float) -> None:
        if not self.enabled:
            return
        logger.info(f"[{self.label}] step {step}/{self.steps} {self.unit}s {tokens:,} loss {loss:.4f} "
                    f"{self.unit}s/s {rate:,.0f}")
        now = time.monotonic()
        if now - self.last_write >= self.every_s or step == self.steps:
            atomic_write_json(self.path, {"step": step, "tokens": tokens, "flops": flops, "loss": loss,
                                          "time": time.time()})
            self.last_write = now


def work_done(results_root: str, states: Mapping[str, RunState], weights: Mapping[str, float],
              flops: Mapping[str, float | None] | None = None, startup: float = 0.0) -> float:
    """Weight of the work a sweep has done: ended runs (DONE_STATES) in full and, where a run's training FLOPs are
    known, started ones (STARTED_STATES) by the share of them their progress.json says they got, after the first
    `startup` of their weight (the start-up an estimate of seconds includes), done once they report at all."""
    total = 0.0
    for rid, state in states.items():
        if state in DONE_STATES:
            total += weights[rid]
        elif state in STARTED_STATES and flops and flops.get(rid):
            report = read_json(RunPaths(run_dir(results_root, rid)).progress)
            if report is not None:
                head = min(startup, weights[rid])
                total += head + (weights[rid] - head) * min(float(report.get("flops", 0.0)) / flops[rid], 1.0)
    return total


def run_weights(run_ids: Sequence[str], flops: Mapping[str, float | None] | None,
                seconds: Mapping[str, float | None] | None = None) -> tuple[dict[str, float], str]:
    """Each run's weight in a progress bar and the bar's unit. Estimated wall seconds (scaling.launch.throughput)
    where some run has one, the others at those runs' median seconds per FLOP: the runs of one sweep differ in
    FLOPs per second several-fold (a narrow model does fewer per second), so with FLOPs as weights the ETA runs too
    high while slow runs go and too low after; else training FLOPs where every run's are known (the manifest has
    them); else 1 run each."""
    known_flops = {rid: float(f) for rid in run_ids if (f := (flops or {}).get(rid))}
    known_s = {rid: float(s) for rid in run_ids if (s := (seconds or {}).get(rid))}
    per_flop = sorted(known_s[rid] / known_flops[rid] for rid in known_s if rid in known_flops)
    if known_s and all(rid in known_s or (rid in known_flops and per_flop) for rid in run_ids):
        median = per_flop[len(per_flop) // 2] if per_flop else 0.0
        return {rid: known_s.get(rid) or known_flops[rid] * median for rid in run_ids}, "s"
    if run_ids and len(known_flops) == len(run_ids):
        return known_flops, "FLOP"
    return {rid: 1.0 for rid in run_ids}, "run"
