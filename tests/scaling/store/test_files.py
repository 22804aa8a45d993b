"""Corrupt run files are that run's problem (one line: the file and the fix; the rest carries on), checkpoints are
checked against the optimizer, leftovers are cleaned, and files are written with the user's umask."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from omegaconf import OmegaConf

from analysis.io.load import iter_directory_records
from scaling.store.paths import RunPaths
from scaling.config.compose import compose_run_config
from scaling.launch.submit import launch
from scaling.store.results import atomic_write_bytes, atomic_write_json, read_jsonl, read_summary, run_dir, run_id
from scaling.store.files import RunFileError, read_config_file, read_metrics_file, read_summary_file
from scaling.launch.status import log_status
from scaling.launch.sweeps import expand
from scaling.cli.train import main as train_main
from scaling.train.loop import train
from sweep_fixtures import TINY_BASE, launch_cfg, tiny_sweep

BAD_SUMMARIES = {"not utf-8": b"\xff\xfe{}", "a list": b"[]", "torn json": b'{"status": "comp',
                 "unknown status": b'{"status": "bogus"}'}


@pytest.mark.parametrize("content", BAD_SUMMARIES.values(), ids=BAD_SUMMARIES.keys())
def test_a_corrupt_summary_is_reported_by_status_launch_train_and_analysis(tmp_path, capsys, content):
    runs = expand(OmegaConf.create(tiny_sweep()), [f"results_root={tmp_path}"]).runs
    bad, good = runs[0].plan.run_id, runs[1].plan.run_id
    p, done = runs[1].plan, run_dir(tmp_path, good)
    summary = {"run_id": good, "status": "completed", "label": "btt", "family": p.family, "structure": p.structure,
               "width": p.width, "params": p.params, "train_flops_per_token": p.train_flops_per_unit,
               "tokens": p.units, "flops": p.train_flops, "final_val_loss": 3.0, "steps": p.steps, "schedule": "cosine"}
    atomic_write_json(done / "summary.json", summary)
    atomic_write_bytes(done / "config.yaml", OmegaConf.to_yaml(runs[1].cfg).encode())
    (done / "metrics.jsonl").write_text('{"step": 0, "kind": "eval"}\n')
    path = run_dir(tmp_path, bad) / "summary.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)

    states = log_status(str(tmp_path), "tiny", [r.plan.run_id for r in runs])
    out = capsys.readouterr().out
    assert states == {"corrupt": 1, "completed": 1, "pending": 2}
    assert f"corrupt {bad}: {path}: " in out and "delete summary.json to let the next launch resume" in out

    launch(launch_cfg(tmp_path, tiny_sweep(), "dry_run=true", "estimate_time=false"))
    captured = capsys.readouterr()
    assert "'corrupt': 1" in captured.out and "2 to run" in captured.out
    assert captured.err.count("\n") == 1 and f"skipped {bad}: {path}" in captured.err

    code = train_main([*runs[0].overrides, f"results_root={tmp_path}", "train.tokens=4096"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and str(path) in err and "delete summary.json" in err
    assert path.read_bytes() == content  # left for the user to inspect: not overwritten with "failed"

    records = {r.run_id: r for r in iter_directory_records(tmp_path)}
    assert records[bad].summary is None and records[good].summary == summary
    assert str(path) in capsys.readouterr().err


def test_each_reader_names_the_file_and_keeps_a_torn_last_line(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_bytes(b'{"step": 1, "kind": "train"}\n{"step": 2, "ki')  # a crash mid-append
    assert read_metrics_file(metrics) == [{"step": 1, "kind": "train"}]
    for content, problem in [(b'{"step": 1}\nnot json\n{"step": 2}\n', "line 2 is not valid JSON"),
                             (b'{"step": "one"}\n', "line 1 is not a metrics row"), (b"\xff\n", "not UTF-8")]:
        metrics.write_bytes(content)
        with pytest.raises(RunFileError, match=problem) as err:
            read_metrics_file(metrics)
        assert str(metrics) in str(err.value) and "delete the run directory" in str(err.value)
    config = tmp_path / "config.yaml"
    for content, problem in [(b"a: [", "not valid YAML at line"), (b"- 1\n- 2\n", "a YAML list"), (b"\xff", "UTF-8")]:
        config.write_bytes(content)
        with pytest.raises(RunFileError, match=problem):
            read_config_file(config)
    assert read_summary_file(tmp_path / "absent.json") is None and read_metrics_file(tmp_path / "absent") == []


def test_files_follow_the_umask_and_stay_atomic(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        os.umask(0o077)
        atomic_write_json(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def finished_run(tmp_path):
    cfg = compose_run_config([*TINY_BASE, "train.tokens=4096", f"results_root={tmp_path}"])
    summary = train(cfg)
    assert summary["status"] == "completed"
    return cfg, run_dir(tmp_path, run_id(cfg)), summary


def reopen(rdir, summary):
    """Make the finished run look interrupted after its last checkpoint (the final one, at its last step)."""
    atomic_write_json(rdir / "summary.json", {**summary, "status": "running"})


@pytest.mark.slow
def test_checkpoint_problems_are_caught_and_leftovers_cleaned(tmp_path, capsys):
    cfg, rdir, summary = finished_run(tmp_path)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in rdir.iterdir() if p.is_file())
    path, steps = RunPaths(rdir).checkpoint, summary["steps"]
    good = path.read_bytes()

    # Leftovers of a killed process are removed by the next start, and resuming at the last step completes.
    (rdir / ".summary.json.0123abcd.tmp").write_text("{")
    (rdir / "wandb" / "tmpab12wandb-media").mkdir(parents=True)
    reopen(rdir, summary)
    assert train(cfg.copy())["status"] == "completed"
    assert not list(rdir.glob(".*.tmp")) and not list(rdir.glob("wandb/tmp*"))

    # Lost evaluation rows are warned about on resume.
    rows = read_jsonl(rdir / "metrics.jsonl")
    (rdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows
                                                if r["kind"] != "eval" or r["step"] == 0))
    reopen(rdir, summary)
    capsys.readouterr()
    train(cfg.copy())
    assert "evaluation row(s) before the checkpoint's step" in capsys.readouterr().err

    # An edited step cannot pass for a finished run; a torn checkpoint names its path and the fix.
    for step, problem in [(steps - 2, f"step {steps - 2} disagrees with the optimizer's {steps} updates"),
                          (steps + 5, f"step {steps + 5} is outside this run's 0..{steps} steps")]:
        state = torch.load(path, weights_only=True)
        state["step"] = step
        torch.save(state, path)
        reopen(rdir, summary)
        code = train_main([*TINY_BASE, "train.tokens=4096", f"results_root={tmp_path}"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err == f"error: {path}: {problem}; delete it to restart the run from step 0"
        assert read_summary(rdir)["status"] == "failed" and problem in read_summary(rdir)["error"]
        path.write_bytes(good)
    path.write_bytes(good[: len(good) // 2])
    reopen(rdir, summary)
    assert train_main([*TINY_BASE, "train.tokens=4096", f"results_root={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {path}: not a loadable checkpoint (RuntimeError); "
                                               "delete it to restart the run from step 0")


@pytest.mark.slow
def test_a_restart_before_the_first_checkpoint_resumes_the_same_wandb_run(tmp_path):
    """kill -9 before any checkpoint, then rerun: one wandb run id (the run id), nothing left in TMPDIR."""
    import signal
    import subprocess
    import sys
    import time

    from sweep_fixtures import REPO

    overrides = [*TINY_BASE, "train.tokens=60000", "logger.mode=offline", "logger.project=ci",
                 f"results_root={tmp_path / 'results'}"]
    rid = run_id(compose_run_config(overrides))
    rdir = run_dir(tmp_path / "results", rid)
    # each process its own wandb service: an in-process wandb run earlier in the session exports WANDB_SERVICE,
    # and a child sharing that service keeps the killed run's id registered ("run ID ... is in use")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"} | {"TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "scaling.train", *overrides], cwd=REPO, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list(rdir.glob("wandb/offline-run-*")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (RunPaths(rdir).checkpoint).exists()
    subprocess.run([sys.executable, "-m", "scaling.train", *overrides], cwd=REPO, env=env, check=True, timeout=300)
    assert read_summary(rdir)["status"] == "completed"
    offline = list(rdir.glob("wandb/offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(f"-{rid}") for p in offline)  # two attempts, one wandb run
    assert not list(rdir.glob("wandb/tmp*")) and not [p for p in (tmp_path / "tmp").iterdir()
                                                      if "wandb" in p.name]
