"""Sweep expansion, validation, dedupe, dry runs, and real local/debug submission."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from scaling.launch.submit import launch
from scaling.store.results import iter_run_dirs, read_json, read_summary, run_dir
from scaling.launch.status import run_state
from scaling.launch.sweeps import SweepError, compose_launch_config, expand, sweep_names
from sweep_fixtures import REPO, TINY_BASE, launch_cfg, shipped_runs, tiny_sweep


@pytest.mark.slow  # plans every run of every shipped sweep (about 100 s on 2 cores)
def test_every_shipped_sweep_expands_and_validates():
    expected = {"quickstart", "btt_gpt2", "structures_gpt2", "mlp_fashion_mnist", "vit_fashion_mnist",
                "lr_transfer", "einsum_taxonomy", "moe_gpt2", "mlp_cbs"}
    assert expected <= set(sweep_names())
    for name in sorted(expected):
        runs = shipped_runs(name)  # expand(compose_launch_config([f"+sweep={name}"]).sweep).runs, once a session
        assert len(runs) >= 6, name
        assert len({r.plan.run_id for r in runs}) == len(runs)
        assert {r.cfg.sweep for r in runs} == {name}


def test_grids_cartesian_isoflop_and_tokens_per_param():
    grid = expand(OmegaConf.create(tiny_sweep())).runs
    assert len(grid) == 4 and {r.plan.units for r in grid} == {4096}

    iso = expand(OmegaConf.create(tiny_sweep(budgets={"flops": [1e10, 4e10]}))).runs
    for r in iso:
        # tokens derived from each model's own FLOPs per token (rounded up to whole steps)
        assert r.plan.train_flops == pytest.approx(r.cfg.train.flops, rel=0.2)
        assert r.plan.units == pytest.approx(r.cfg.train.flops / r.plan.train_flops_per_unit, rel=0.2)
    small = [r for r in iso if r.plan.width == 32 and r.plan.structure == "dense"]
    big = [r for r in iso if r.plan.width == 48 and r.plan.structure == "dense"]
    assert small[0].plan.units > big[0].plan.units  # same FLOPs, smaller model, more tokens

    tpp = expand(OmegaConf.create(tiny_sweep(budgets={"tokens_per_param": [20]}))).runs
    for r in tpp:
        assert r.cfg.train.tokens == int(20 * r.plan.train_flops_per_unit / 6)


def test_from_curves_trains_each_point_once_to_the_largest_budget_and_reads_the_rest():
    budgets = {"flops": [1e10, 2e10, 4e10], "from_curves": True}
    sweep = tiny_sweep(budgets=budgets, base=[*TINY_BASE, "train.schedule=constant"])
    runs = expand(OmegaConf.create(sweep)).runs
    assert len(runs) == 4  # 2 variants x 2 widths, not x 3 budgets
    for r in runs:
        assert r.cfg.train.flops == 4e10
        assert list(r.cfg.train.eval_flops) == [1e10, 2e10]


@pytest.mark.parametrize("budgets, base, message", [
    ({"flops": [1e10, 4e10], "from_curves": True}, TINY_BASE, "needs train.schedule=constant"),
    ({"tokens": [4096, 8192], "from_curves": True}, [*TINY_BASE, "train.schedule=constant"], "needs budgets.flops"),
    ({"flops": [1e10], "from_curves": "yes"}, [*TINY_BASE, "train.schedule=constant"], "must be true or false"),
])
def test_from_curves_misuse_fails_naming_the_fix(budgets, base, message):
    with pytest.raises(SweepError, match=message):
        expand(OmegaConf.create(tiny_sweep(budgets=budgets, base=base)))


def test_invalid_runs_are_all_reported_and_nothing_is_submitted(tmp_path):
    sweep = tiny_sweep(variants={"ok": {"overrides": ["structure=dense"]},
                                 "bad_heads": {"overrides": ["structure=dense", "model.head_dim=20"]},
                                 "bad_budget": {"overrides": ["structure=btt", "train.batch_size=100000"]}})
    with pytest.raises(SweepError) as err:
        launch(launch_cfg(tmp_path, sweep))
    message = str(err.value)
    assert "4 invalid run(s)" in message and "nothing was submitted" in message
    assert message.count("run [bad_heads") == 2 and "model.head_dim" in message
    assert message.count("run [bad_budget") == 2 and "train.batch_size" in message
    assert "run [ok" not in message
    assert not list(iter_run_dirs(tmp_path))


def test_sweep_names_cannot_escape_the_results_root(tmp_path):
    for name in ["../../etc/evil", "/abs", ".hidden", "a/b", ""]:
        with pytest.raises(SweepError, match="sweep.name"):
            expand(OmegaConf.create(tiny_sweep(name=name)))
    with pytest.raises(Exception):
        compose_launch_config(["+sweep=../conf/run"])


def test_unknown_sweep_and_missing_sweep_fail_clearly():
    result = subprocess.run([sys.executable, "-m", "scaling.launch"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "+sweep=NAME" in result.stderr and "quickstart" in result.stderr


@pytest.mark.slow  # a launcher process planning the 45 runs of btt_gpt2
def test_dry_run_prints_the_table_and_submits_nothing(tmp_path):
    result = subprocess.run([sys.executable, "-m", "scaling.launch", "+sweep=btt_gpt2", "dry_run=true",
                             "estimate_time=false", f"results_root={tmp_path}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("sweep 'btt_gpt2': 45 runs")
    assert sum(" pending " in line for line in lines) == 45
    assert lines[1].split() == ["run_id", "state", "label", "family", "structure", "width", "params", "tokens",
                                "FLOPs", "est", "swept"]
    rows = [line.split() for line in lines[3:-1]]
    labels = [row[2] for row in rows]
    assert {label: labels.count(label) for label in set(labels)} == {"dense": 15, "btt_r1": 15, "btt_r4": 15}
    assert all(row[-2].startswith("model.width=") and row[-1].startswith("flops=") for row in rows)
    assert "total to run: 45 runs" in lines[-1] and "nothing submitted" in lines[-1]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "submitit").exists()


@pytest.mark.slow
def test_dry_run_estimates_time_from_measured_throughput(tmp_path, capsys):
    launch(launch_cfg(tmp_path, tiny_sweep(), "dry_run=true"))
    out = capsys.readouterr().out
    assert re.search(r"~\d+(\.\d)? (s|min|h) of compute", out.splitlines()[-1])
    cache = read_json(tmp_path / "throughput.json")
    assert len(cache) == 4 and all(rate > 0 for rate in cache.values())


@pytest.mark.slow
@pytest.mark.parametrize("cluster", ["local", "debug"])
def test_sweep_runs_then_relaunch_submits_nothing(tmp_path, cluster, capsys):
    cfg = launch_cfg(tmp_path, tiny_sweep(), f"cluster={cluster}")
    jobs = launch(cfg)
    assert len(jobs) >= 1
    summaries = [read_summary(d) for d in iter_run_dirs(tmp_path)]
    assert len(summaries) == 4 and {s["status"] for s in summaries} == {"completed"}
    assert {s["sweep"] for s in summaries} == {"tiny"}
    manifest = read_json(tmp_path / "sweeps" / "tiny.json")
    assert {r["run_id"] for r in manifest["runs"]} == {s["run_id"] for s in summaries}
    capsys.readouterr()
    assert launch(launch_cfg(tmp_path, tiny_sweep(), f"cluster={cluster}")) == []
    assert "0 to run" in capsys.readouterr().out


@pytest.mark.slow
def test_failed_runs_are_retried_only_when_asked(tmp_path, capsys):
    variants = {"dense": {"overrides": ["structure=dense"]}, "broken": {"overrides": ["structure=btt"]}}
    sweep = tiny_sweep(axes={"model.width": [32]}, variants=variants)
    broken = next(r for r in expand(OmegaConf.create(sweep)).runs if r.label.startswith("broken"))
    rdir = run_dir(tmp_path, broken.plan.run_id)  # a checkpoint that does not load fails the run when it starts
    rdir.mkdir(parents=True)
    (rdir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    launch(launch_cfg(tmp_path, sweep, "cluster=debug"))
    states = sorted(read_summary(d)["status"] for d in iter_run_dirs(tmp_path))
    assert states == ["completed", "failed"]
    failed = [read_summary(d) for d in iter_run_dirs(tmp_path) if read_summary(d)["status"] == "failed"][0]
    assert "checkpoint.pt: not a loadable checkpoint" in failed["error"]
    capsys.readouterr()
    assert launch(launch_cfg(tmp_path, sweep, "cluster=debug")) == []
    assert "{'completed': 1, 'failed': 1}; 0 to run" in capsys.readouterr().out
    assert len(launch(launch_cfg(tmp_path, sweep, "cluster=debug", "retry_failed=true"))) == 1


@pytest.mark.slow
def test_many_runs_finishing_at_once_lose_nothing(tmp_path):
    """Four local jobs train eight runs concurrently into one results root; every result is whole."""
    sweep = tiny_sweep(axes={"model.width": [32, 48], "train.seed": [0, 1]})
    launch(launch_cfg(tmp_path, sweep, "cluster=local", "cluster.runs_per_job=2", "cluster.cpus_per_task=1",
                      "cluster.parallel_jobs=4"))
    summaries = [read_summary(d) for d in iter_run_dirs(tmp_path)]
    assert len(summaries) == 8 and all(s["status"] == "completed" for s in summaries)
    for d in iter_run_dirs(tmp_path):
        rows = [line for line in (d / "metrics.jsonl").read_text().splitlines()]
        assert rows and all(line.startswith("{") and line.endswith("}") for line in rows)
        assert run_state(str(tmp_path), d.name) == "completed"


@pytest.mark.slow  # launches local jobs that train 8 runs
def test_local_jobs_share_one_queue_and_train_each_run_once(tmp_path):
    """Without runs_per_job every local slot gets the whole list; leases and finished summaries make it a queue."""
    from scaling.launch.submit import pack

    runs = expand(OmegaConf.create(tiny_sweep(axes={"model.width": [32, 48], "train.seed": [0, 1]}))).runs
    local = compose_launch_config(["+sweep=quickstart", "cluster=local", "cluster.parallel_jobs=3"]).cluster
    assert [len(batch) for batch in pack(runs, local)] == [8, 8, 8]
    slurm = compose_launch_config(["+sweep=quickstart", "cluster=slurm"]).cluster
    assert [len(batch) for batch in pack(runs, slurm)] == [1] * 8
    debug = compose_launch_config(["+sweep=quickstart", "cluster=debug"]).cluster
    assert [len(batch) for batch in pack(runs, debug)] == [8]

    sweep = tiny_sweep(axes={"model.width": [32, 48], "train.seed": [0, 1]})
    launch(launch_cfg(tmp_path, sweep, "cluster=local", "cluster.cpus_per_task=1", "cluster.parallel_jobs=2"))
    for d in iter_run_dirs(tmp_path):
        assert read_summary(d)["status"] == "completed" and read_summary(d)["restarts"] == 0
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        steps = [r["step"] for r in rows if r["kind"] == "train"]
        assert steps == sorted(set(steps))  # one training pass: no step logged twice


@pytest.mark.slow  # trains a run in a subprocess
def test_secrets_never_reach_run_files(tmp_path):
    env = dict(os.environ, WANDB_API_KEY="sekrit-0123456789abcdef0123456789abcdef01234567")
    result = subprocess.run([sys.executable, "-m", "scaling.train", *TINY_BASE, "train.tokens=2048",
                             "logger.mode=offline", f"results_root={tmp_path}"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)
    for path in files:
        assert b"sekrit-0123456789" not in path.read_bytes(), path


def test_run_overrides_on_the_command_line_apply_to_every_run(tmp_path):
    cfg = compose_launch_config(["+sweep=quickstart", "train.seed=3", "structure=btt", "dry_run=true",
                                 "cluster=slurm"])
    assert list(cfg.overrides) == ["train.seed=3", "structure=btt"]
    assert cfg.dry_run and cfg.cluster.kind == "slurm"
    runs = expand(OmegaConf.create(tiny_sweep()), ["train.seed=3"]).runs
    assert {r.cfg.train.seed for r in runs} == {3}
    with pytest.raises(Exception, match="cluster.foo"):
        compose_launch_config(["+sweep=quickstart", "cluster.foo=1"])
