"""wandb runs (API-like records) become the same tables as run directories."""

from __future__ import annotations


import pandas as pd

from analysis import table_from_records
from analysis.io.synthetic import HOFFMANN, SyntheticStructure, SyntheticSweep
from analysis.io.wandb_source import records_from_wandb_runs
from wandb_records import ApiRun


def as_wandb(rec, flat_config: bool) -> ApiRun:
    """A run as the trainer logs it: summary.json in the summary, metric rows in the history (step as _step)."""
    config = rec.config
    if flat_config:
        config = {f"{section}.{k}": {"value": v} for section, values in config.items() if isinstance(values, dict)
                  for k, v in values.items()} | {k: {"value": v} for k, v in config.items() if not isinstance(v, dict)}
    history = [{**{k: v for k, v in row.items() if k not in ("kind", "step")}, "_step": row["step"]}
               for row in rec.metrics]
    history.insert(1, {"_step": 150, "loss": 3.0, "lr": 1e-3})  # a train row: ignored
    summary = dict(rec.summary)
    state = "finished" if summary["status"] == "completed" else "crashed"
    summary.pop("status")
    return ApiRun(f"w{rec.run_id[:6]}", state, summary, config, history)


def test_wandb_records_match_directory_records():
    records = SyntheticSweep([SyntheticStructure("einsum", HOFFMANN, theta=(0.5, 0, 0.5, 0, 0.5, 0.5, 0))],
                             budgets=(1e13, 4e13), sizes_per_budget=3, diverged=1).records()
    direct = table_from_records(records)
    for flat in (False, True):
        via_wandb = table_from_records(records_from_wandb_runs([as_wandb(r, flat) for r in records]))
        pd.testing.assert_frame_equal(direct.runs, via_wandb.runs, check_dtype=False)
        pd.testing.assert_frame_equal(direct.evals.drop(columns="step"), via_wandb.evals.drop(columns="step"),
                                      check_dtype=False)
        # crashed in wandb, no status in the summary: excluded as failed, with the reason
        assert list(via_wandb.excluded["reason"]) == ["status failed"]
        assert set(via_wandb.runs["label"]) == {"einsum"}
