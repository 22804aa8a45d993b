"""`--config-dir DIR` (`-cd DIR`, `hydra.searchpath=[file://DIR]`) adds a user's own model, structure and sweep
configs to every entry point, and to every run a sweep launches; a folder that is not there is one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from scaling.cli.describe import main as describe_main
from scaling.cli.launch import main as launch_main
from scaling.cli.status import main as status_main
from scaling.cli.train import main as train_main
from scaling.config.compose import CONF_DIR, compose_run_config
from scaling.launch.submit import launch_sweep
from scaling.store.results import iter_run_dirs, read_summary
from sweep_fixtures import REPO

# a user's presets: a BTT of rank 2 (the shipped btt is rank 1) and a one-layer GPT-2 small enough to train in seconds
WIDE_BTT = {"name": "btt", "rank": 2}
TINY = {"width": 16, "base_width": 16, "depth": 1, "head_dim": 8, "context": 16}
TINY_GPT = yaml.safe_load((CONF_DIR / "model" / "gpt2.yaml").read_text()) | TINY
TRAIN = ["train.batch_size=4", "train.tokens=640", "train.eval_points=2", "logger.mode=disabled"]


@pytest.fixture
def user_dir(tmp_path) -> Path:
    folder = tmp_path / "my_conf"
    for group, name, node in (("structure", "wide_btt", WIDE_BTT), ("model", "tiny_gpt", TINY_GPT),
                              ("sweep", "my_grid", {"base": ["model=tiny_gpt", *TRAIN],
                                                    "variants": {"wide": {"overrides": ["structure=wide_btt"]},
                                                                 "dense": {"overrides": ["structure=dense"]}},
                                                    "budgets": {"tokens": [640]}})):
        (folder / group).mkdir(parents=True, exist_ok=True)
        (folder / group / f"{name}.yaml").write_text(yaml.safe_dump(node))
    return folder


def flag_forms(folder: Path) -> list[list[str]]:
    return [["--config-dir", str(folder)], [f"--config-dir={folder}"], ["-cd", str(folder)],
            [f"hydra.searchpath=[file://{folder}]"]]


def test_describe_builds_a_users_structure_and_model_with_each_flag_form(user_dir, capsys):
    assert describe_main(["--json", "model=gpt2", "structure=btt", "structure.rank=2", "model.width=64"]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert describe_main(["--json", "model=gpt2", "structure=btt", "model.width=64"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] < expected["params"]  # rank 1 has fewer
    for form in flag_forms(user_dir):
        assert describe_main(["--json", *form, "model=gpt2", "structure=wide_btt", "model.width=64"]) == 0
        described = json.loads(capsys.readouterr().out)
        assert described["params"] == expected["params"] and described["layers"] == expected["layers"]
    assert describe_main(["--json", "-cd", str(user_dir), "model=tiny_gpt"]) == 0
    tiny = json.loads(capsys.readouterr().out)
    assert (tiny["width"], tiny["depth"], tiny["base_width"]) == (16, 1, 16)


def test_cfg_job_composes_the_users_preset(user_dir, capsys):
    assert train_main(["-cd", str(user_dir), "--cfg", "job", "structure=wide_btt"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["structure"] == OmegaConf.to_container(
        compose_run_config(["structure=btt", "structure.rank=2"]).structure)


def test_launch_dry_run_finds_the_users_sweep_and_presets(user_dir, tmp_path, capsys):
    results = tmp_path / "results"
    common = ["dry_run=true", "estimate_time=false", f"results_root={results}"]
    assert launch_main(["-cd", str(user_dir), "+sweep=my_grid", *common]) == 0
    assert "sweep 'my_grid': 2 runs {'pending': 2}; 2 to run" in capsys.readouterr().out
    manifest = launch_sweep("my_grid", [f"hydra.searchpath=[file://{user_dir}]", *common])
    assert manifest["overrides"][0] == f"hydra.searchpath=['file://{user_dir.resolve()}']"  # each run composes with it
    # the user's presets make the same runs as the shipped ones with the same settings (same config, same run id)
    shipped = launch_sweep({"name": "shipped", "budgets": {"tokens": [640]},
                            "base": ["model=gpt2", *(f"model.{k}={v}" for k, v in TINY.items()),
                                     *TRAIN],
                            "variants": {"wide": {"overrides": ["structure=btt", "structure.rank=2"]},
                                         "dense": {"overrides": ["structure=dense"]}}}, common)
    assert {r["label"].split()[0]: r["run_id"] for r in manifest["runs"]} == {
        r["label"].split()[0]: r["run_id"] for r in shipped["runs"]}
    # a -m grid over the user's structures
    assert train_main(["-m", "-cd", str(user_dir), "model=tiny_gpt", *TRAIN, "structure=wide_btt,dense",
                       *common]) == 0
    out = capsys.readouterr().out
    assert "2 runs {'pending': 2}; 2 to run" in out and " btt_r2 " in out
    assert not results.exists()


@pytest.mark.parametrize("main", [train_main, launch_main, status_main, describe_main])
def test_a_config_dir_that_is_not_there_is_one_line(main, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    sweep = ["+sweep=quickstart"] if main in (launch_main, status_main) else []
    for args in (["--config-dir", str(missing)], [f"hydra.searchpath=[file://{missing}]"], ["-cd"]):
        code = main([*sweep, f"results_root={tmp_path / 'results'}", *args])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1, lines
        if args == ["-cd"]:
            assert lines == ["error: -cd needs a folder: -cd DIR (a folder of model/, structure/, sweep/ config "
                             "files)"]
        else:
            assert lines[0].startswith(f"error: {args[0].split('=')[0]} {missing}: no such folder")
    assert not (tmp_path / "results").exists()


@pytest.mark.slow  # trains a tiny run in a process of its own
def test_train_from_another_directory_with_a_relative_config_dir(user_dir, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = ["-cd", user_dir.name, "model=tiny_gpt", "structure=wide_btt", *TRAIN, "results_root=results"]
    result = subprocess.run([sys.executable, "-m", "scaling.train", *args], cwd=user_dir.parent, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    [run] = list(iter_run_dirs(user_dir.parent / "results"))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["structure"]["rank"] == 2 and cfg["model"]["width"] == 16
    assert read_summary(run)["status"] == "completed"


@pytest.mark.slow  # trains two tiny runs in this process
def test_a_launched_job_trains_the_users_preset_and_status_finds_the_sweep(user_dir, tmp_path, capsys):
    results = tmp_path / "results"
    assert launch_main(["-cd", str(user_dir), "+sweep=my_grid", "cluster=debug", f"results_root={results}"]) == 0
    runs = {yaml.safe_load((d / "config.yaml").read_text())["label"]: d for d in iter_run_dirs(results)}
    assert set(runs) == {"wide", "dense"}
    assert yaml.safe_load((runs["wide"] / "config.yaml").read_text())["structure"]["rank"] == 2
    assert {read_summary(d)["status"] for d in runs.values()} == {"completed"}
    capsys.readouterr()
    assert status_main(["--config-dir", str(user_dir), "+sweep=my_grid", f"results_root={results}"]) == 0
    assert "sweep 'my_grid': 2 runs: completed 2" in capsys.readouterr().out
