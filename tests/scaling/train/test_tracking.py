"""wandb runs of a sweep, read back from their real offline files: names, tags, group, grouped metrics, x-axes."""

from __future__ import annotations

from collections import defaultdict

import pytest

from analysis.io.load import table_from_records
from analysis.io.wandb_source import records_from_wandb_runs
from scaling.launch.submit import launch
from scaling.store.results import iter_run_dirs, read_summary
from scaling.train.tracking import grouped, name_sweep_run, run_name, run_tags, wandb_config
from sweep_fixtures import TINY_BASE, launch_cfg, tiny_sweep
from wandb_records import ApiRun, item_key, offline_api_run, read_records


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


def test_wandb_config_keeps_the_sections_and_records_the_trained_units():
    cfg = {"model": {"width": 64}, "structure": {"name": "btt", "rank": 4, "layout": "paper"},
           "train": {"tokens": 262_144, "flops": 3e8, "lr": 0.01}, "label": "btt_r4"}
    plan = {"run_id": "abc", "structure": "btt", "units": 2816, "steps": 11}
    config = wandb_config(cfg, plan)
    assert config["structure"] == {"name": "btt", "rank": 4, "layout": "paper"}
    assert config["train"] == {"tokens": 2816, "flops": 3e8, "lr": 0.01}
    assert config["plan"] == plan and config["run_id"] == "abc" and config["label"] == "btt_r4"
    assert cfg["train"]["tokens"] == 262_144  # the run config itself is left alone


def test_analysis_reads_runs_whose_structure_section_was_a_name():
    """Runs logged before issue 23 carry `structure: "btt"` (the plan merged over the config) and the status's name
    (`COMPLETED`): read, not a crash or an exclusion."""
    summary = {"run_id": "r1", "status": "COMPLETED", "final_val_loss": 2.5, "train_flops_per_token": 6e4,
               "tokens": 2048, "flops": 1.2e8, "family": "gpt2", "width": 32}
    run = ApiRun("r1", "finished", summary, {"structure": "btt", "model": {"family": "gpt2", "width": 32},
                                             "train": {"tokens": 262_144}}, [])
    table = table_from_records(records_from_wandb_runs([run]))
    assert table.excluded.empty
    assert table.runs[["structure", "label", "tokens"]].to_dict("records") == [
        {"structure": "btt", "label": "btt", "tokens": 2048}]


@pytest.mark.slow
def test_a_flop_budget_sweep_logs_the_whole_config_and_analysis_reads_it_back(tmp_path):
    """The wandb config of a real offline run keeps structure.rank/layout/layers, says the units trained, has job type
    `train`; analysis reads the runs back from those files with their labels, structures and budgets."""
    sweep = tiny_sweep(base=[*TINY_BASE, "logger.mode=offline"], axes={"model.width": [32]},
                       variants={"dense": {"overrides": ["structure=dense"]},
                                 "btt_r2": {"overrides": ["structure=btt", "structure.rank=2"]}},
                       budgets={"flops": [3e8]})
    launch(launch_cfg(tmp_path, sweep, "cluster=debug"))
    summaries = {read_summary(d)["label"]: (d, read_summary(d)) for d in iter_run_dirs(tmp_path)}
    api_runs = []
    for label, (rdir, summary) in summaries.items():
        [path] = rdir.glob("wandb/offline-run-*/run-*.wandb")
        [run] = [r.run for r in read_records(path) if r.WhichOneof("record_type") == "run"]
        assert run.job_type == "train"
        api_run = offline_api_run(path)
        assert api_run.summary["status"] == "completed"  # summary.json's value, not the enum's name
        config = api_run.config
        assert config["structure"]["name"] == summary["structure"]
        assert {"rank", "layout", "layers"} <= set(config["structure"])
        assert config["train"]["tokens"] == summary["tokens"] != 262_144  # the units trained, not the default
        assert config["plan"]["units"] == summary["tokens"] and config["run_id"] == summary["run_id"]
        api_runs.append(api_run)
    assert summaries["btt_r2"][1]["structure"] == "btt"
    table = table_from_records(records_from_wandb_runs(api_runs))
    assert table.excluded.empty
    rows = {r["label"]: r for r in table.runs.to_dict("records")}
    assert sorted(rows) == ["btt_r2", "dense"]
    for label, (_rdir, summary) in summaries.items():
        assert (rows[label]["structure"], rows[label]["tokens"]) == (summary["structure"], summary["tokens"])
    assert set(table.evals["run_id"]) == {s["run_id"] for _d, s in summaries.values()}


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
