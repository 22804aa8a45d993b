"""End-to-end training runs on CPU: learning, resume equality, divergence, wandb offline files, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling.config.compose import compose_run_config
from scaling.store.files import RunFileError
from scaling.store.results import read_jsonl, read_summary, run_dir, run_id
from scaling.train.loop import train
from scaling.train.steps import eval_steps

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]
TINY_GPT = ["model=gpt2", "model.width=32", "model.base_width=32", "model.depth=1", "model.head_dim=16",
            "model.context=32", "train.batch_size=8", "train.lr=0.01", "logger.mode=disabled"]


def cfg_for(tmp_path: Path, *overrides: str):
    cfg = compose_run_config([*TINY_GPT, f"results_root={tmp_path}", *overrides])
    return cfg


def test_eval_steps_are_log_spaced_with_start_and_end():
    assert eval_steps(100, 5) == [0, 1, 3, 10, 32, 100]
    assert eval_steps(1, 4) == [0, 1]


@pytest.mark.parametrize("overrides", [
    ["structure=dense"],
    ["structure=btt", "structure.rank=1"],
    ["structure=btt", "structure.rank=1", "train.precision=bf16"],  # bf16 autocast on the CPU
    ["structure=low_rank", "structure.rank_frac=0.25"],
    ["model=mlp", "data=teacher", "model.width=32", "model.depth=2", "structure=kron",
     "structure.layers=intermediate", "train.batch_size=128"],
])
def test_a_short_run_learns_and_records_everything(tmp_path, overrides):
    cfg = cfg_for(tmp_path, "train.tokens=40000", "train.eval_points=4", "train.log_every=5", *overrides)
    summary = train(cfg)
    rdir = run_dir(tmp_path, run_id(cfg))
    assert summary["status"] == "completed"
    assert read_summary(rdir) == summary
    rows = read_jsonl(rdir / "metrics.jsonl")
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == eval_steps(summary["steps"], 4)
    assert evals[-1]["val_loss"] < 0.8 * evals[0]["val_loss"]  # it learns
    assert summary["final_val_loss"] == evals[-1]["val_loss"]
    assert summary["flops"] == pytest.approx(summary["tokens"] * summary["train_flops_per_token"])
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert all(r["tokens_per_s"] > 0 and r["flops_per_s"] > 0 for r in train_rows)
    assert (rdir / "config.yaml").exists() and (rdir / "checkpoint.pt").exists()
    # Relaunching a finished run does nothing and returns the same summary.
    assert train(cfg_for(tmp_path, "train.tokens=40000", "train.eval_points=4", "train.log_every=5",
                         *overrides)) == summary


def test_interrupted_run_resumes_to_the_same_loss_curve(tmp_path):
    """SIGUSR2 mid-run (what Slurm sends before a timeout): checkpoint, exit; rerun resumes bit-for-bit."""
    overrides = [*TINY_GPT, "structure=btt", "train.tokens=200000", "train.log_every=1",
                 "train.eval_points=6"]
    reference = compose_run_config([*overrides, f"results_root={tmp_path / 'straight'}"])
    train(reference)
    straight = read_jsonl(run_dir(tmp_path / "straight", run_id(reference)) / "metrics.jsonl")

    root = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "scaling.train", *overrides, f"results_root={root}"]
    proc = subprocess.Popen(cmd, cwd=REPO)
    metrics = run_dir(root, run_id(reference)) / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(r["step"] >= 10 for r in read_jsonl(metrics)):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(timeout=60) == 128 + signal.SIGUSR2
    summary = read_summary(run_dir(root, run_id(reference)))
    assert summary["status"] == "running"
    assert (run_dir(root, run_id(reference)) / "checkpoint.pt").exists()
    stopped_at = max(r["step"] for r in read_jsonl(metrics))
    assert 0 < stopped_at < summary["steps_target"]

    subprocess.run(cmd, cwd=REPO, check=True)
    resumed = read_jsonl(metrics)
    assert read_summary(run_dir(root, run_id(reference)))["status"] == "completed"

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in ("wall_s", "tokens_per_s", "flops_per_s")} for r in rows]

    assert strip(resumed) == strip(straight)


def test_divergence_is_recorded_not_raised(tmp_path):
    cfg = cfg_for(tmp_path, "train.tokens=40000", "train.lr=1e4", "train.warmup_tokens=0", "train.grad_clip=0",
                  "train.diverge_factor=1.5")
    summary = train(cfg)
    assert summary["status"] == "diverged"
    assert summary["final_val_loss"] is None
    assert summary["steps"] < summary["steps_target"]


def test_wandb_offline_files_hold_the_logged_metrics(tmp_path):
    from wandb_records import item_key, read_records

    cfg = cfg_for(tmp_path, "train.tokens=20000", "logger.mode=offline", "logger.project=ci",
                  "logger.tags=[smoke]")
    summary = train(cfg)
    files = list(run_dir(tmp_path, run_id(cfg)).glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    history, config = [], {}
    for record in read_records(files[0]):
        if record.WhichOneof("record_type") == "history":
            history.append({item_key(i): json.loads(i.value_json) for i in record.history.item})
        if record.WhichOneof("record_type") == "run":
            config.update({item_key(i): json.loads(i.value_json) for i in record.run.config.update})
    losses = [h["eval/val_loss"] for h in history if "eval/val_loss" in h]  # grouped: scaling.train.tracking
    assert losses and losses[-1] == pytest.approx(summary["final_val_loss"])
    assert any("train/loss" in h and "flops" in h for h in history)
    assert config["run_id"] == summary["run_id"]
    assert "WANDB_API_KEY" not in (run_dir(tmp_path, run_id(cfg)) / "config.yaml").read_text()


def test_ddp_two_processes_match_one_process(tmp_path):
    """gloo DDP over 2 CPU processes with the same global batch gives the single-process loss curve."""
    overrides = [*TINY_GPT, "structure=btt", "train.tokens=20000", "train.log_every=1"]
    single = compose_run_config([*overrides, f"results_root={tmp_path / 'one'}"])
    train(single)
    one = read_jsonl(run_dir(tmp_path / "one", run_id(single)) / "metrics.jsonl")

    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                    "-m", "scaling.train", *overrides, f"results_root={tmp_path / 'two'}"],
                   cwd=REPO, env=env, check=True, timeout=300)
    two = read_jsonl(run_dir(tmp_path / "two", run_id(single)) / "metrics.jsonl")

    def loss(rows, kind, key):
        return [r[key] for r in rows if r["kind"] == kind]

    assert loss(two, "train", "step") == loss(one, "train", "step")
    assert loss(two, "train", "loss") == pytest.approx(loss(one, "train", "loss"), rel=1e-4, abs=1e-5)
    assert loss(two, "eval", "val_loss") == pytest.approx(loss(one, "eval", "val_loss"), rel=1e-4, abs=1e-5)


def test_a_resume_refuses_a_setting_the_run_id_pins_that_differs_from_config_yaml(tmp_path):
    """config.yaml records train.threads=1; a process that would resume the checkpoint with 2 threads (or any other
    pinned setting) is refused with the file and the fix, and resumes once they agree again."""
    cfg = cfg_for(tmp_path, "train.tokens=4096", "train.eval_points=2")
    assert train(cfg)["status"] == "completed"
    rdir = run_dir(tmp_path, run_id(cfg))
    (rdir / "summary.json").unlink()  # as if it stopped after its last checkpoint: the next train resumes
    config = rdir / "config.yaml"
    saved = config.read_text()
    assert "threads: 1" in saved
    config.write_text(saved.replace("threads: 1", "threads: 2"))
    with pytest.raises(RunFileError, match=r"config.yaml: its settings are not those of run [0-9a-f]{16} \(edited "
                       r"since the run started"):  # read_summary's check fires before the checkpoint's identity one
        train(cfg_for(tmp_path, "train.tokens=4096", "train.eval_points=2"))
    config.write_text(saved)
    assert train(cfg_for(tmp_path, "train.tokens=4096", "train.eval_points=2"))["status"] == "completed"
