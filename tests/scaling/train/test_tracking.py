"""wandb runs of a sweep, read back from their real offline files: names, tags, group, grouped metrics, x-axes."""

from __future__ import annotations

from collections import defaultdict

import pytest

from analysis.io.wandb_source import records_from_wandb_runs
from scaling.launch.submit import launch
from scaling.store.results import iter_run_dirs, read_summary
from scaling.train.tracking import grouped, name_sweep_run, run_name, run_tags
from wandb_records import ApiRun
from sweep_fixtures import TINY_BASE, launch_cfg, tiny_sweep
from wandb_records import item_key, read_records


def test_names_tags_and_metric_groups():
    cfg = {"label": "btt_r4", "model": {"family": "gpt2", "width": 64, "depth": 2},
           "structure": {"name": "btt", "rank": 4}, "train": {"tokens": 2_097_152, "lr": 0.003, "seed": 1},
           "logger": {"name": None, "tags": []}}
    assert run_name(cfg) == "btt_r4 gpt2 d64 L2 2.1e+06tok lr0.003 s1"
    named = name_sweep_run(cfg, ["model.width=64", "flops=3e+13"])
    assert named["logger"] == {"name": "btt_r4 model.width=64 flops=3e+13", "tags": ["model.width=64", "flops=3e+13"]}
    assert run_tags(named) == ["gpt2", "btt", "btt_r4"]  # then logger.tags, in the Tracker
    kept = name_sweep_run({**cfg, "logger": {"name": "mine", "tags": ["x"]}}, ["model.width=64"])
    assert kept["logger"] == {"name": "mine", "tags": ["x", "model.width=64"]}
    row = {"kind": "train", "step": 10, "tokens": 640, "flops": 1e9, "loss": 2.5, "lr": 1e-3}
    assert grouped(row) == {"tokens": 640, "flops": 1e9, "train/loss": 2.5, "train/lr": 1e-3}
    assert grouped({"kind": "eval", "step": 10, "flops": 1e9, "val_loss": 2.4}) == {"flops": 1e9, "eval/val_loss": 2.4}


def test_analysis_reads_grouped_eval_metrics():
    history = [{"_step": 0, "flops": 0.0, "tokens": 0, "eval/val_loss": 5.5},
               {"_step": 5, "flops": 1e9, "tokens": 320, "train/loss": 3.0},
               {"_step": 10, "flops": 2e9, "tokens": 640, "eval/val_loss": 2.5}]
    [record] = records_from_wandb_runs([ApiRun("w1", "finished", {"run_id": "r1"}, {}, history)])
    assert [(r["step"], r["flops"], r["val_loss"]) for r in record.metrics] == [(0, 0.0, 5.5), (10, 2e9, 2.5)]


@pytest.mark.slow
def test_a_sweep_runs_offline_file_holds_label_axes_group_and_x_axes(tmp_path):
    sweep = tiny_sweep(base=[*TINY_BASE, "logger.mode=offline"], axes={"model.width": [32], "train.lr": [0.01]},
                       budgets={"tokens": [2048]})
    launch(launch_cfg(tmp_path, sweep, "cluster=debug"))
    runs = {read_summary(d)["label"]: d for d in iter_run_dirs(tmp_path)}
    assert sorted(runs) == ["btt", "dense"]
    for label, rdir in runs.items():
        [path] = rdir.glob("wandb/offline-run-*/run-*.wandb")
        by_type = defaultdict(list)
        for record in read_records(path):
            by_type[record.WhichOneof("record_type")].append(record)
        run = by_type["run"][0].run
        assert run.display_name == f"{label} model.width=32 train.lr=0.01 tokens=2048"
        # family, structure (here the same as the label: one tag), the swept settings
        assert list(run.tags) == ["gpt2", label, "model.width=32", "train.lr=0.01", "tokens=2048"]
        assert run.run_group == "tiny"
        metrics = {(m.metric.name or m.metric.glob_name): m.metric.step_metric for m in by_type["metric"]}
        assert metrics["train/*"] == "flops" and metrics["eval/*"] == "flops"
        assert "flops" in metrics and "tokens" in metrics
        keys = {item_key(item) for h in by_type["history"] for item in h.history.item}
        assert {"train/loss", "train/tokens_per_s", "eval/val_loss", "flops", "tokens"} <= keys
        assert not {"loss", "val_loss"} & keys
