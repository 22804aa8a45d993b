"""The commands take Hydra's standard flags, `-m` grids, user sweep files and a Python API, as a Hydra user expects."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from scaling.config.compose import CONF_DIR, SweepPathError, compose_run_config
from scaling.launch.submit import launch_sweep
from analysis.io.load import load_sweeps
from scaling.cli.command import CommandLineError
from scaling.cli.multirun import multirun_sweep, sweep_name
from scaling.store.manifest import Manifest, ManifestRun
from scaling.store.results import iter_run_dirs, read_json, read_summary
from scaling.launch.status import sweep_status
from scaling.launch.sweeps import SweepError, compose_launch_config, expand
from sweep_fixtures import REPO, TINY_BASE, tiny_sweep

COMMANDS = ("scaling.train", "scaling.launch", "scaling.status", "scaling.describe")
STRUCTURES = sorted(p.stem for p in (CONF_DIR / "structure").glob("*.yaml"))


def cli(module: str, *args: str, cwd: Path, env: dict | None = None, timeout: int = 120):
    """Run `python -m module args` from `cwd` with this checkout importable and the default data cache
    ($XDG_CACHE_HOME/scaling, with XDG_CACHE_HOME a folder beside cwd; not the session's SCALING_DATA_DIR)."""
    inherited = {k: v for k, v in os.environ.items() if k != "SCALING_DATA_DIR"}
    env = dict(inherited, PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(cwd.parent / f"{cwd.name}-xdg-cache"),
               **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


# one entry point's process in the fast lane; the other three (a process each) are slow
@pytest.mark.parametrize("module", [m if m == "scaling.train" else pytest.param(m, marks=pytest.mark.slow)
                                    for m in COMMANDS])
def test_help_lists_every_config_group_and_writes_nothing(module, tmp_path):
    result = cli(module, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    section = result.stdout.split("== Config groups ==")[1].split("== Flags ==")[0]
    groups = dict(line.split(": ", 1) for line in section.splitlines() if ": " in line)
    assert groups["structure"].split(", ") == STRUCTURES
    assert groups["model"] == "gpt2, mlp, vit" and groups["cluster"] == "debug, local, slurm"
    assert result.stdout.startswith(f"python -m {module}: ")
    assert list(tmp_path.iterdir()) == []  # no outputs/, no .hydra/, no log file


@pytest.mark.slow  # 3 entry-point processes
def test_cfg_job_prints_the_composed_run_config(tmp_path):
    result = cli("scaling.train", "--cfg", "job", "structure=btt", "model.width=256", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    expected = OmegaConf.to_container(compose_run_config(["structure=btt", "model.width=256"]))
    assert printed == expected and printed["structure"]["name"] == "btt" and printed["model"]["width"] == 256
    hydra_part = yaml.safe_load(cli("scaling.train", "--cfg", "hydra", cwd=tmp_path).stdout)
    assert hydra_part["hydra"]["job"]["name"] == "scaling.train"
    launch = yaml.safe_load(cli("scaling.launch", "--cfg", "job", "+sweep=quickstart", "cluster=slurm",
                                "train.seed=3", "data.path='a b'", cwd=tmp_path).stdout)
    assert launch["sweep"]["name"] == "quickstart" and launch["cluster"]["kind"] == "slurm"
    assert launch["overrides"] == ["train.seed=3", "data.path='a b'"]  # run overrides, applied to every run
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # 3 entry-point processes
def test_info_and_shell_completion(tmp_path):
    info = cli("scaling.train", "--info", "searchpath", cwd=tmp_path)
    assert info.returncode == 0 and f"file://{CONF_DIR}" in info.stdout
    query = cli("scaling.train", "--shell-completion", "query=bash", cwd=tmp_path,
                env={"COMP_LINE": "scaling-train structure=b"})
    assert query.returncode == 0
    assert query.stdout.split() == [
        "structure=btt", "structure=btt_moe", "structure=btt_moe_norm", "structure=btt_norm",
    ]
    install = cli("scaling.train", "-sc", "install=bash", cwd=tmp_path)
    assert "complete -o nospace -o default -F hydra_bash_completion" in install.stdout


@pytest.mark.slow  # 8 entry-point processes; test_bad_inputs.py checks the same lines in this process
def test_bad_input_is_one_line_not_a_traceback(tmp_path):
    for module in ("scaling.describe", "scaling.train"):
        result = cli(module, "structure=foo", cwd=tmp_path)
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and "'structure/foo'" in line and "btt_moe" in line
    for module in ("scaling.train", "scaling.launch"):
        for arg in ("hydra/launcher=submitit_slurm", "hydra/launcher=submitit_local"):
            result = cli(module, arg, "+sweep=quickstart", cwd=tmp_path)
            [line] = result.stderr.strip().splitlines()
            assert result.returncode == 2 and "hydra/launcher is not used" in line and "cluster=slurm" in line
    result = cli("scaling.launch", "-m", "+sweep=quickstart", cwd=tmp_path)
    assert result.returncode == 2 and "scaling.train -m" in result.stderr
    result = cli("scaling.train", "-m", "train.tokens=1024,2048", "train.flops=1e9,2e9", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: -m sweeps one budget: give train.tokens=a,b or train.flops=a,b, not both"]
    assert list(tmp_path.iterdir()) == []


def test_multirun_overrides_become_a_sweep():
    spec = multirun_sweep([*TINY_BASE, "structure=dense,btt", "model.width=32,48", "train.tokens=2048,4096"])
    # the structure is what is compared: a variant each, labelled by it; the width is an axis
    assert spec["variants"] == {"dense": {"overrides": ["structure=dense"]},
                                "btt_r1": {"overrides": ["structure=btt"]}}
    assert spec["axes"] == {"model.width": ["32", "48"]}
    assert spec["budgets"] == {"tokens": [2048.0, 4096.0]} and spec["base"] == TINY_BASE
    assert spec["name"].startswith("multirun_")
    runs = expand(OmegaConf.create(spec)).runs
    assert len(runs) == 8
    assert {(r.plan.structure, r.plan.width, r.plan.units) for r in runs} == {
        (s, w, t) for s in ("dense", "btt") for w in (32, 48) for t in (2048, 4096)}
    assert {r.cfg.label for r in runs} == {r.label.split()[0] for r in runs} == {"dense", "btt_r1"}
    # settings the default label does not show are added to it, so every variant is told apart
    layouts = multirun_sweep([*TINY_BASE, "structure=btt", "structure.rank=2,4", "structure.layout=paper,balanced",
                              "model.parametrization=structure_aware,naive"], name="mine")
    assert layouts["name"] == "mine" and layouts["axes"] == {}
    assert sorted(layouts["variants"]) == sorted(
        f"btt_r{r}_layout={lay}_parametrization={par}" for r in (2, 4) for lay in ("paper", "balanced")
        for par in ("structure_aware", "naive"))
    ranged = multirun_sweep([*TINY_BASE, "train.seed=range(0,3)"])
    assert ranged["axes"] == {"train.seed": ["0", "1", "2"]}
    assert ranged["budgets"] == {"tokens": [compose_run_config(TINY_BASE).train.tokens]}
    # the name (and so the manifest) is a function of the grid: the same command line finds the same sweep
    assert multirun_sweep([*TINY_BASE, "train.seed=range(0,3)"])["name"] == ranged["name"] != spec["name"]


@pytest.mark.slow
def test_multirun_trains_the_grid_once(tmp_path):
    args = ["-m", *TINY_BASE, "train.tokens=2048", "structure=dense,btt", "model.width=32,48",
            f"results_root={tmp_path / 'results'}", "cluster=local", "cluster.parallel_jobs=2"]
    first = cli("scaling.train", *args, cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    summaries = [read_summary(d) for d in iter_run_dirs(tmp_path / "results")]
    assert len(summaries) == 4 and {s["status"] for s in summaries} == {"completed"}
    assert {(s["structure"], s["width"]) for s in summaries} == {(s, w) for s in ("dense", "btt") for w in (32, 48)}
    assert "4 runs {'pending': 4}; 4 to run" in first.stdout and "in 2 local job(s)" in first.stdout
    [manifest] = (tmp_path / "results" / "sweeps").glob("multirun_*.json")
    assert {r["label"].split()[0] for r in read_json(manifest)["runs"]} == {"dense", "btt_r1"}
    name = manifest.stem
    assert f"sweep {name}: python -m scaling.status +sweep={name} results_root={tmp_path / 'results'}" in first.stdout
    status = cli("scaling.status", f"+sweep={name}", f"results_root={tmp_path / 'results'}", cwd=tmp_path)
    assert status.returncode == 0 and f"sweep '{name}': 4 runs: completed 4" in status.stdout, status.stderr
    [table] = load_sweeps(tmp_path / "results", [name]).values()
    assert sorted(table.runs.groupby("label").size().items()) == [("btt_r1", 2), ("dense", 2)]
    # each job's log has one line per log step of each of its runs: label, width, seed, step, tokens, loss, tokens/s
    logs = "".join(p.read_text() for p in (tmp_path / "results" / "submitit").rglob("*_log.out"))
    steps = re.findall(r"^\[(dense|btt_r1) (d32|d48) s0\] step (\d+)/8 tokens ([\d,]+) loss (\d+\.\d{4}) "
                       r"tokens/s [\d,]+$", logs, re.MULTILINE)
    assert sorted(set((label, width) for label, width, *_ in steps)) == [
        ("btt_r1", "d32"), ("btt_r1", "d48"), ("dense", "d32"), ("dense", "d48")]  # each run told apart
    dense = [(s, t) for label, _width, s, t, _ in steps if label == "dense"]
    # each dense run logs its first and last step; the wider one also at the narrower one's final FLOPs (an eval)
    assert dense.count(("1", "256")) == 2 and dense.count(("8", "2,048")) == 2
    assert all(int(t.replace(",", "")) == 256 * int(s) for s, t in dense)
    second = cli("scaling.train", *args, cwd=tmp_path, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "4 runs {'completed': 4}; 0 to run" in second.stdout and "nothing to submit" in second.stdout
    assert len(list((tmp_path / "results" / "submitit").iterdir())) == 1  # one launch submitted jobs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # the data cache is not in the cwd
    assert (tmp_path.parent / f"{tmp_path.name}-xdg-cache" / "scaling").is_dir()


def test_status_finds_a_named_grid_by_its_manifest(tmp_path):
    """`-m ... sweep_name=NAME` has no sweep file: scaling.status +sweep=NAME reads its manifest; an unknown name,
    or a sweep_name that is a sweep file's, is one line."""
    spec = multirun_sweep([*TINY_BASE, "structure=dense,btt", "train.tokens=2048"], name="my_grid")
    runs = expand(OmegaConf.create(spec)).runs
    Manifest("my_grid", tuple(ManifestRun(r.plan.run_id, r.label, r.plan.train_flops) for r in runs)).write(tmp_path)
    status = sweep_status("my_grid", overrides=[f"results_root={tmp_path}"])
    assert status["counts"] == {"pending": 2} and {r["label"].split()[0] for r in status["runs"]} == {"dense",
                                                                                                     "btt_r1"}
    with pytest.raises(SweepError, match=r"\+sweep=nope: no sweep file of that name .* and no manifest"):
        sweep_status("nope", overrides=[f"results_root={tmp_path}"])
    assert sweep_name(["sweep_name=my_grid", "cluster=debug"]) == ("my_grid", ["cluster=debug"])
    with pytest.raises(CommandLineError, match="sweep_name=quickstart is the name of a sweep file"):
        sweep_name(["sweep_name=quickstart"])
    with pytest.raises(CommandLineError, match="sweep_name='a/b' must be a plain name"):
        sweep_name(["sweep_name=a/b"])


def write_sweep(folder: Path, name: str, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tiny_sweep(name=name, **extra)))
    return path


def test_user_sweep_files_by_path_folder_and_environment(tmp_path, monkeypatch):
    path = write_sweep(tmp_path / "mine", "my_grid", axes={"model.width": [32, 48, 64]})
    assert compose_launch_config([f"+sweep={path}"]).sweep.name == "my_grid"
    assert len(expand(compose_launch_config([f"+sweep={path}"]).sweep).runs) == 6
    by_dir = compose_launch_config([f"sweep_dir={tmp_path / 'mine'}", "+sweep=my_grid", "dry_run=true"])
    assert by_dir.sweep.name == "my_grid" and by_dir.dry_run
    monkeypatch.setenv("SCALING_SWEEPS", str(tmp_path / "mine"))
    assert compose_launch_config(["+sweep=my_grid"]).sweep.axes["model.width"] == [32, 48, 64]
    write_sweep(tmp_path / "shadow", "quickstart")  # a user folder comes before the shipped sweeps
    assert compose_launch_config([f"sweep_dir={tmp_path / 'shadow'}", "+sweep=quickstart"]).sweep.base == TINY_BASE
    with pytest.raises(SweepPathError, match="sweep_dir"):
        compose_launch_config([f"sweep_dir={tmp_path / 'nowhere'}", "+sweep=quickstart"])
    with pytest.raises(SweepPathError, match="no such sweep file"):
        compose_launch_config([f"+sweep={tmp_path / 'nowhere.yaml'}"])


def test_python_api_dry_run_returns_the_manifest_without_writing_it(tmp_path):
    manifest = launch_sweep(tiny_sweep(), overrides=[f"results_root={tmp_path}", "dry_run=true",
                                                     "estimate_time=false"], cluster="slurm")
    assert manifest["name"] == "tiny" and manifest["jobs"] == []
    assert len(manifest["runs"]) == 4 and {r["state"] for r in manifest["runs"]} == {"pending"}
    assert all(r["flops"] > 0 for r in manifest["runs"])
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_python_api_launches_and_reports(tmp_path):
    path = write_sweep(tmp_path / "sweeps_here", "api_grid", budgets={"tokens": [2048]})
    manifest = launch_sweep(path, overrides=[f"results_root={tmp_path / 'r'}"], cluster="debug")
    assert manifest["name"] == "api_grid" and len(manifest["jobs"]) == 1
    assert {r["state"] for r in manifest["runs"]} == {"completed"} and len(manifest["runs"]) == 4
    status = sweep_status(path, overrides=[f"results_root={tmp_path / 'r'}"])
    assert status["counts"] == {"completed": 4}
    assert {r["label"] for r in status["runs"]} == {r["label"] for r in manifest["runs"]}
    again = launch_sweep(path, overrides=[f"results_root={tmp_path / 'r'}"], cluster="debug")
    assert again["jobs"] == manifest["jobs"]  # nothing new submitted


@pytest.mark.slow
@pytest.mark.slurm
def test_multirun_on_slurm_goes_out_as_one_job_array(slurm_cluster, tmp_path):
    results = tmp_path / "results"
    args = ["-m", *TINY_BASE, "train.tokens=2048", "structure=dense,btt", "model.width=32", f"results_root={results}",
            "cluster=slurm", "cluster.cpus_per_task=1", "cluster.timeout_min=5", "cluster.signal_delay_s=30"]
    first = cli("scaling.train", *args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    [array] = re.findall(r"submitted 2 runs in 2 slurm job\(s\): (\d+)_0, \1_1;", first.stdout)
    [manifest] = (results / "sweeps").glob("multirun_*.json")
    assert read_json(manifest)["jobs"] == [f"{array}_0", f"{array}_1"]
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and len([d for d in iter_run_dirs(results)
                                               if (read_summary(d) or {}).get("status") == "completed"]) < 2:
        time.sleep(1)
    assert sorted((read_summary(d)["structure"], read_summary(d)["status"]) for d in iter_run_dirs(results)) == [
        ("btt", "completed"), ("dense", "completed")]
    second = cli("scaling.train", *args, cwd=tmp_path)
    assert "2 runs {'completed': 2}; 0 to run" in second.stdout and "submitted" not in second.stdout


PROBE = """import builtins, os
seen = []
real_import = builtins.__import__
def spy(name, *args, **kwargs):
    if name.split(".")[0] == "torch" and not seen:
        seen.append(os.environ.get("OMP_WAIT_POLICY"))
    return real_import(name, *args, **kwargs)
builtins.__import__ = spy
import {modules}
print(seen[0] if seen else "no-torch", os.environ.get("OMP_WAIT_POLICY"))
"""


ENTRY_POINTS = ["scaling.cli.train", "scaling.cli.launch", "scaling.cli.status", "scaling.cli.describe",
                "scaling.cli.coordcheck", "scaling.cli.coordsuite", "scaling.data.prepare", "scaling.launch.jobs"]
# the scaling.data package imports torch before prepare's first line, so prepare's torch starts with OpenMP's own
# policy (it tokenises and downloads); the variable is still set for everything it starts
AFTER_TORCH = {"scaling.data.prepare"}


def omp_probe(modules: str, **env: str) -> list[str]:
    """[OMP_WAIT_POLICY when torch is first imported (or no-torch), OMP_WAIT_POLICY after importing `modules`]."""
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", PROBE.format(modules=modules)], cwd=REPO, env={**base, **env},
                          capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_importing_the_package_sets_no_environment_variable():
    assert omp_probe("scaling, scaling.structures, scaling.models, scaling.data, scaling.train.steps") == ["None"] * 2
    assert omp_probe("scaling.cli.train", OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "ACTIVE"]  # the environment wins


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_entry_points_set_omp_wait_before_torch_starts(entry):
    first, after = omp_probe(entry)
    assert after == "PASSIVE"
    assert first in (("None",) if entry in AFTER_TORCH else ("PASSIVE", "no-torch"))
