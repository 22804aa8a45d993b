"""Cooldown branches: a wsd run forked from a constant-LR trunk's snapshot at its decay's first step computes
exactly what the same wsd run trained from step 0 does, so a trunk and short decays give annealed reads at every
budget for a fraction of the cost of training each budget on its own."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from analysis.io.load import load_sweeps
from scaling.config.compose import compose_run_config
from scaling.launch.submit import launch, pack
from scaling.launch.sweeps import SweepError, compose_launch_config, expand
from scaling.store.results import iter_run_dirs, read_jsonl, read_summary, run_id
from scaling.store.paths import RunPaths
from scaling.train.fork import ForkError, fork_step
from scaling.train.loop import train
from scaling.train.plan import plan_run
from sweep_fixtures import TINY_BASE, launch_cfg, tiny_sweep

BASE = ["structure=btt", *TINY_BASE, "train.warmup_tokens=512", "train.threads=1", "train.device=cpu"]
BUDGET = 4096  # tokens of the branch (16 steps of 256); the trunk trains to 8192


def _cfg(root, *overrides):
    return compose_run_config([*BASE, f"results_root={root}", *overrides])


def _branch_args(trunk: str) -> list[str]:
    return ["train.schedule=wsd", "train.decay_frac=0.25", f"train.tokens={BUDGET}", f"train.fork_from={trunk}"]


@pytest.mark.slow  # trains 3 tiny runs
def test_a_branch_from_the_trunk_equals_the_run_trained_to_its_budget(tmp_path):
    scratch_cfg = _cfg(tmp_path, "train.schedule=wsd", "train.decay_frac=0.25", f"train.tokens={BUDGET}")
    step = fork_step(plan_run(scratch_cfg.copy()).steps, 0.25)
    trunk_cfg = _cfg(tmp_path, "train.schedule=constant", "train.tokens=8192", f"train.snapshot_steps=[{step}]")
    trunk = train(trunk_cfg)
    assert RunPaths(tmp_path / "runs" / trunk["run_id"]).snapshot(step).is_file()
    branch = train(_cfg(tmp_path, *_branch_args(trunk["run_id"])))
    scratch = train(scratch_cfg)
    assert branch["run_id"] != scratch["run_id"] and branch["status"] == "completed"
    assert branch["final_val_loss"] == scratch["final_val_loss"]  # bit for bit
    assert branch["tokens"] == scratch["tokens"] == BUDGET and branch["steps"] == scratch["steps"]
    # the branch's curve: the trunk's rows up to the fork, then its own decay, row for row the scratch run's
    def rows(rid: str, after: int = -1) -> list[tuple]:
        return [(r["kind"], r["step"], r.get("loss"), r.get("lr"), r.get("val_loss"))
                for r in read_jsonl(RunPaths(tmp_path / "runs" / rid).metrics) if r["step"] > after]

    decay = rows(branch["run_id"], step)
    assert decay and decay == rows(scratch["run_id"], step)
    assert rows(branch["run_id"])[:-len(decay)] == [r for r in rows(trunk["run_id"]) if r[1] <= step]


@pytest.mark.slow  # trains a tiny run
def test_a_branch_refuses_a_trunk_it_cannot_start_from(tmp_path):
    trunk = train(_cfg(tmp_path, "train.schedule=constant", "train.tokens=8192"))  # no snapshots kept
    with pytest.raises(ForkError, match="no snapshot at this branch's first decay step; train the trunk with "
                                        "train.snapshot_steps including"):
        train(_cfg(tmp_path, *_branch_args(trunk["run_id"])))
    with pytest.raises(ForkError, match="differs from this branch in more than schedule and budget"):
        train(_cfg(tmp_path, *_branch_args(trunk["run_id"]), "train.lr=0.02"))
    with pytest.raises(ForkError, match="set train.schedule=wsd"):
        train(_cfg(tmp_path, *_branch_args(trunk["run_id"]), "train.schedule=cosine"))
    with pytest.raises(ForkError, match="the trunk has no readable config"):
        train(_cfg(tmp_path, *_branch_args("0123456789abcdef")))


def test_unset_cooldown_settings_leave_the_run_id_alone():
    cfg = compose_run_config(BASE)
    assert run_id(cfg) == run_id(compose_run_config([*BASE, "train.snapshot_steps=[]"]))
    assert run_id(cfg) != run_id(compose_run_config([*BASE, "train.snapshot_steps=[3]"]))
    assert run_id(cfg) != run_id(compose_run_config([*BASE, "train.fork_from=0123456789abcdef"]))


COOL = {"flops": [1e10, 2e10, 4e10], "from_curves": True, "cooldown": 0.25}


def _cool_sweep(**budgets):
    return tiny_sweep(budgets=COOL | budgets, base=[*TINY_BASE, "train.schedule=constant"],
                      variants={"btt": {"overrides": ["structure=btt"]}})


def test_a_cooldown_sweep_is_trunks_then_branches_forking_where_each_budget_decays():
    runs = expand(OmegaConf.create(_cool_sweep())).runs
    assert len(runs) == 8  # 2 widths x (1 trunk + 3 branches)
    for trunk, *branches in (runs[:4], runs[4:]):
        assert trunk.cfg.train.schedule == "constant" and trunk.cfg.train.fork_from is None
        assert [b.cfg.train.fork_from for b in branches] == [trunk.plan.run_id] * 3
        assert [b.cfg.train.flops for b in branches] == COOL["flops"]
        forks = [fork_step(b.plan.steps, 0.25) for b in branches]
        assert list(trunk.cfg.train.snapshot_steps) == forks and branches[-1].plan.steps == trunk.plan.steps
        assert all(b.cfg.train.schedule == "wsd" and not b.cfg.train.snapshot_steps for b in branches)
        assert branches[0].axes[-2:] == ["flops=1e+10", "cooldown=0.25"]
    slurm = compose_launch_config(["+sweep=quickstart", "cluster=slurm"]).cluster
    assert [[r.plan.run_id for r in job] for job in pack(runs, slurm)] == [
        [r.plan.run_id for r in runs[:4]], [r.plan.run_id for r in runs[4:]]]  # a trunk and its branches: one job


@pytest.mark.parametrize("cooldown", [0, 1, True, "0.2"])
def test_cooldown_must_be_a_fraction(cooldown):
    with pytest.raises(SweepError, match=f"sweep.budgets.cooldown={cooldown!r} must be a fraction in"):
        expand(OmegaConf.create(_cool_sweep(cooldown=cooldown)))
    with pytest.raises(SweepError, match="with from_curves: true"):
        expand(OmegaConf.create(_cool_sweep(from_curves=False, cooldown=0.2)))


@pytest.mark.slow  # launches local jobs that train 8 runs, then reads them
def test_a_launched_cooldown_sweep_trains_each_run_once_and_reads_the_branches(tmp_path):
    launch(launch_cfg(tmp_path, _cool_sweep(), "cluster=local", "cluster.cpus_per_task=1",
                      "cluster.parallel_jobs=2"))
    summaries = {d.name: read_summary(d) for d in iter_run_dirs(tmp_path)}
    assert len(summaries) == 8 and all(s["status"] == "completed" and s["restarts"] == 0
                                       for s in summaries.values())
    (table,) = load_sweeps(tmp_path).values()
    trunks = set(table.excluded["run_id"])
    assert len(trunks) == 2 and set(table.excluded["reason"]) == {"cooldown trunk (its branches are the reads)"}
    assert len(table.runs) == 6 and set(table.runs["schedule"]) == {"wsd"}
    assert sorted({round(f, -8) for f in table.runs["flops"]}) == COOL["flops"]


@pytest.mark.slow  # trains a tiny run
def test_a_config_from_before_the_cooldown_settings_trains_as_the_same_run(tmp_path):
    """A queued or requeued job's config written by an older version lacks train.snapshot_steps and fork_from:
    it trains under the same run id instead of failing on the missing keys."""
    cfg = _cfg(tmp_path, "train.tokens=2048")
    old = OmegaConf.to_container(cfg)
    del old["train"]["snapshot_steps"], old["train"]["fork_from"]
    assert run_id(old) == run_id(cfg)
    summary = train(OmegaConf.create(old))
    assert summary["status"] == "completed" and summary["run_id"] == run_id(cfg)
