"""A non-editable install carries conf/ and sweeps/: the commands work from any directory, without the checkout."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sweep_fixtures import REPO

# The checkout minus what a build would not read (and what other work may be writing to meanwhile).
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "results", "data_cache", "build", "*.egg-info", "__pycache__",
                                    "*.so", "wandb", ".pytest_cache")


def sh(*cmd: str | Path, cwd: Path, timeout: int = 600, xdg_cache: Path | None = None
       ) -> subprocess.CompletedProcess[str]:
    """Run `cmd` from `cwd` as a user of the wheel: the default data cache ($XDG_CACHE_HOME/scaling, with
    XDG_CACHE_HOME `xdg_cache` if given; not the session's) and no PYTHONPATH that could reach the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("SCALING_DATA_DIR", "PYTHONPATH")}
    if xdg_cache is not None:
        env["XDG_CACHE_HOME"] = str(xdg_cache)
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_a_wheel_install_runs_a_shipped_sweep_from_an_empty_directory(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    pip = venv / "bin" / "pip"
    sh(pip, "install", "-q", "torch==2.13.0", cwd=tmp_path)  # the CPU build from the local index, first
    sh(pip, "install", "-q", source, cwd=tmp_path)  # not editable: a wheel built from the copy
    shutil.rmtree(source)  # nothing may come from the source tree any more

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    python = venv / "bin" / "python"
    where = sh(python, "-c", "import scaling.config.compose as c; print(c.CONF_DIR); print(c.SWEEPS_DIR)", cwd=empty)
    site = sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=empty).stdout.strip()
    assert where.stdout.split() == [f"{site}/scaling/conf", f"{site}/scaling/sweep_files"]

    cpuinfo = Path("/proc/cpuinfo")
    avx2 = platform.machine() in ("x86_64", "AMD64") and cpuinfo.exists() and " avx2" in cpuinfo.read_text()
    if avx2:  # the compiled GEMM (with the thread-pool header it includes) was built too
        sh(python, "-c", "from scaling.structures.fastpath import native; assert native.available()", cwd=empty)
    help_text = sh(venv / "bin" / "scaling-train", "--help", cwd=empty).stdout
    structures = "btt, btt_moe, btt_moe_norm, btt_norm, dense, einsum, einsum_norm, kron, low_rank, monarch, tt"
    assert f"structure: {structures}" in help_text
    dry = sh(python, "-m", "scaling.launch", "+sweep=quickstart", "dry_run=true", cwd=empty,
             xdg_cache=tmp_path / "xdg-cache")
    lines = dry.stdout.splitlines()
    assert lines[0] == "sweep 'quickstart': 20 runs {'pending': 20}; 20 to run"
    assert lines[-1].startswith("total to run: 20 runs") and "of compute" in lines[-1], dry.stdout
    # the measured throughput lands in the results store (./results), the corpus in the user's data cache
    # ($XDG_CACHE_HOME/scaling), not the cwd; no outputs/
    assert sorted(p.name for p in empty.iterdir()) == ["results"]
    assert (tmp_path / "xdg-cache" / "scaling").is_dir()
    assert [p.name for p in (empty / "results").iterdir()] == ["throughput.json"]
