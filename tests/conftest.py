"""Shared pytest fixtures.

`slurm_cluster` gives the Slurm integration tests a real single-node cluster (slurm/cluster.sh): it reuses one that
is already running, or starts one and stops it again at the end of the session. Slurm's ports are fixed, so there is
one cluster per machine: `make test` runs the tests marked `slurm` in a process of their own after the rest (on two
pytest-xdist workers), and collection fails for a test that uses the cluster without that marker.

Tests write nothing into the checkout: the token caches of runs that keep the default `data.cache_dir` go to a cache
outside it (SCALING_DATA_DIR), and the session fails if the checkout gained a file.
"""

from __future__ import annotations

import scaling.omp_passive  # noqa: F401  (as every entry point: OMP_WAIT_POLICY before torch starts)

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scaling.process import log_to_console

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO_ROOT / "slurm" / "cluster.sh"
# One binary from each Debian package slurm/install.sh installs.
SLURM_BINARIES = ("slurmctld", "slurmd", "sbatch", "munged", "slurmdbd", "mariadbd")
START_TIMEOUT_S = 180
# What may appear in the checkout during a session: bytecode, and the caches of pytest and of a linter run beside it.
ALLOWED_IN_CHECKOUT = ("__pycache__/", ".pytest_cache/", ".ruff_cache/")


def _checkout_files() -> set[str] | None:
    """Untracked files in the checkout, ignored ones included (None when it is not a git work tree)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--ignored", "-z"],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    entries = [entry[3:] for entry in out.split("\0") if entry[:2] in ("??", "!!")]
    return {path for path in entries if not any(part in path for part in ALLOWED_IN_CHECKOUT)}


@pytest.fixture(scope="session", autouse=True)
def nothing_written_into_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Default token caches outside the checkout; after the session, no new file in it (ignored ones included)."""
    before = _checkout_files()
    with pytest.MonkeyPatch.context() as patch:
        if "SCALING_DATA_DIR" not in os.environ:  # kept across sessions, as ./data_cache was: caches are versioned
            patch.setenv("SCALING_DATA_DIR", str(tmp_path_factory.getbasetemp().parent / "scaling-data-cache"))
        yield
    after = _checkout_files()
    if before is not None and after is not None and after - before:
        new = "\n".join(sorted(after - before)[:20])
        pytest.fail(f"the tests wrote into the checkout {REPO_ROOT}:\n{new}", pytrace=False)


@dataclass(frozen=True)
class SlurmCluster:
    """A running local cluster: clients reach it through `conf` (exported as SLURM_CONF)."""

    conf: Path
    started_here: bool  # True when this session started it (and so stops it)


def _missing_slurm_binaries() -> list[str]:
    search_path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [name for name in SLURM_BINARIES if shutil.which(name, path=search_path) is None]


def _cluster_script(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )


def _slurm_conf_path(output: str) -> Path:
    """The SLURM_CONF path that `cluster.sh start|status` prints."""
    match = re.search(r"SLURM_CONF=(\S+)", output)
    if match is None:
        raise RuntimeError(f"slurm/cluster.sh printed no SLURM_CONF line:\n{output}")
    return Path(match.group(1))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test on the local Slurm cluster is marked `slurm` (module docstring)."""
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()) and item.get_closest_marker("slurm") is None:
            raise pytest.UsageError(f"{item.nodeid} uses slurm_cluster: mark it @pytest.mark.slurm")


@pytest.fixture(scope="session", autouse=True)
def console_logging() -> None:
    """The library's log records on stdout and stderr as the commands show them (scaling.process.log_to_console),
    so a test that calls a library function reads with capsys what a user of the command sees."""
    log_to_console()


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A real local Slurm cluster for the session, with SLURM_CONF set in os.environ.

    Never skips: CI installs the packages, so a missing install is a failure with the fix in its message.
    """
    missing = _missing_slurm_binaries()
    if missing:
        pytest.fail(
            f"the Slurm packages are not installed (missing {', '.join(missing)}): "
            "run `bash slurm/install.sh` as root, then rerun the tests",
            pytrace=False,
        )
    status = _cluster_script("status")
    started_here = status.returncode != 0
    if started_here:
        start = _cluster_script("start")
        if start.returncode != 0:
            pytest.fail(
                f"`bash slurm/cluster.sh start` failed (exit {start.returncode}):\n{start.stdout}{start.stderr}",
                pytrace=False,
            )
        conf = _slurm_conf_path(start.stdout)
    else:
        conf = _slurm_conf_path(status.stdout)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(conf))
        try:
            yield SlurmCluster(conf=conf, started_here=started_here)
        finally:
            if started_here:
                stop = _cluster_script("stop")
                if stop.returncode != 0:
                    pytest.fail(f"`bash slurm/cluster.sh stop` failed:\n{stop.stdout}{stop.stderr}", pytrace=False)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models and tensors: one intra-op thread (extra threads only spin-wait on a shared 2-core machine)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
