"""Faults of the results store, through the real commands (scaling.status, scaling.launch, scaling.train and
`python -m analysis report`), one table per kind:

  BAD_RUNS: one run of a sweep of four has bad files (truncated, empty, not UTF-8, `[]`, a directory or deleted
      summary.json; a summary field of the wrong type, negative, NaN, null or missing, or another run's id; a run
      killed as it took its lease; a torn lease; missing or empty metrics.jsonl; an edited or missing config.yaml).
      Every command carries on with the other runs and names the bad one in one line; the report of the other
      three is written. An evaluation row without a usable val_loss costs only that row (named in one line).
  ROOT_FAULTS: the results root (or the report's --out) is empty, a file, under a file, read-only, immutable or
      full. One `error:` line naming the path and the fix, exit status 2, nothing created. Read-only, immutable
      and full use a real tmpfs mount and `chattr +i` (root only; skipped, saying why, where they cannot be made).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from analysis.cli import main as analysis_main
from scaling.cli.launch import main as launch_main
from scaling.cli.status import main as status_main
from scaling.cli.train import main as train_main
from scaling.launch.sweeps import expand
from scaling.store.lease import TORN_STALE_S
from scaling.store.paths import RunPaths
from scaling.train.steps import eval_steps
from scaling.config.compose import compose_run_config
from scaling.store.results import (
    append_jsonl, atomic_write_bytes, atomic_write_json, read_summary, run_dir, run_id,
)
from sweep_fixtures import TINY_BASE, tiny_sweep

REPORT_ARGS = ["--replicates", "10", "--workers", "1"]
# the tiny sweep as the shipped sweeps run: a constant LR (every evaluation is a valid read) and 8 evaluations
SWEEP = tiny_sweep(base=[*TINY_BASE, "train.schedule=constant", "train.eval_points=8"])
E, A, ALPHA, B, BETA = 1.8, 40.0, 0.3, 8.0, 0.3  # the stored runs' law: L(N, D) = E + A / N^alpha + B / D^beta


def law_loss(n_eff: float, tokens: float) -> float:
    return E + A / n_eff ** ALPHA + B / tokens ** BETA


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _age(path: Path, seconds: float) -> None:
    os.utime(path, (time.time() - seconds, time.time() - seconds))


# --- the bad runs: (how the run's files are spoiled, the file the one line names, what status calls the run) ---

def _write(name: str, content: bytes):
    def spoil(paths: RunPaths) -> Path:
        path = getattr(paths, name)
        path.write_bytes(content)
        return path
    return spoil


def _summary_dir(paths: RunPaths) -> Path:
    paths.summary.unlink()
    (paths.summary / "inner").mkdir(parents=True)
    return paths.summary


def _remove(name: str):
    def spoil(paths: RunPaths) -> Path:
        getattr(paths, name).unlink()
        return getattr(paths, name)
    return spoil


def _summary_field(key: str, value):
    def spoil(paths: RunPaths) -> Path:
        summary = json.loads(paths.summary.read_text())
        paths.summary.write_text(json.dumps({**summary, key: value}))
        return paths.summary
    return spoil


def _drop_summary_field(key: str):
    def spoil(paths: RunPaths) -> Path:
        summary = json.loads(paths.summary.read_text())
        paths.summary.write_text(json.dumps({k: v for k, v in summary.items() if k != key}))
        return paths.summary
    return spoil


def _eval_loss(value):
    """The third evaluation's val_loss replaced by `value`."""
    def spoil(paths: RunPaths) -> Path:
        rows = [json.loads(line) for line in paths.metrics.read_text().splitlines()]
        rows[2]["val_loss"] = value
        paths.metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return paths.metrics
    return spoil


def _edit_config(paths: RunPaths) -> Path:
    config = yaml.safe_load(paths.config.read_text())
    config["train"]["lr"] = 0.02  # the run trained with 0.01: its directory name no longer matches
    paths.config.write_text(yaml.safe_dump(config))
    return paths.config


def _killed_at_lease(paths: RunPaths) -> Path:
    """What a process killed right after taking the lease leaves: the directory and the lease, nothing else."""
    for path in paths.dir.iterdir():
        path.unlink()
    paths.lease.write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid(), "pid_start": "1",
                                       "time": time.time()}))
    return paths.summary


def _torn_lease(paths: RunPaths) -> Path:
    """Killed between creating the lease and writing it: an empty lease, older than a torn lease may live."""
    for path in paths.dir.iterdir():
        path.unlink()
    paths.lease.write_bytes(b"")
    _age(paths.lease, TORN_STALE_S + 20)
    return paths.summary


CORRUPT, PENDING, COMPLETED = "corrupt", "pending", "completed"  # COMPLETED: the run is kept, its bad rows left out
BAD_RUNS = {  # case: (spoil, what status calls the run, the problem the one line names)
    "truncated summary": (_write("summary", b'{"status": "comp'), CORRUPT, "not valid JSON"),
    "empty summary": (_write("summary", b""), CORRUPT, "not valid JSON"),
    "summary not utf-8": (_write("summary", b"\xff\xfe{}"), CORRUPT, "not UTF-8 text"),
    "summary a list": (_write("summary", b"[]"), CORRUPT, "holds a JSON list, not an object"),
    "summary a directory": (_summary_dir, CORRUPT, "is a directory, not a file"),
    "summary deleted": (_remove("summary"), PENDING, "does not exist"),
    "killed after taking its lease": (_killed_at_lease, PENDING, "does not exist"),
    "torn lease": (_torn_lease, PENDING, "does not exist"),
    "metrics missing": (_remove("metrics"), CORRUPT, "missing, but the run has completed"),
    "metrics empty": (_write("metrics", b""), CORRUPT, "empty, but the run has completed"),
    "config edited": (_edit_config, CORRUPT, "its settings are not those of run"),
    # issue 23, a second fresh table: a summary field of the wrong type no longer crashes the report for every run
    "summary params a string": (_summary_field("params", "big"), CORRUPT, 'params holds "big", not a positive number'),
    "summary width a list": (_summary_field("width", [1, 2]), CORRUPT, "width holds [1, 2], not a positive number"),
    "summary sweep a number": (_summary_field("sweep", 7), CORRUPT, "sweep holds 7, not a non-empty string"),
    # issue 23: damaged fields were used silently (or gave numpy warnings); now one line, and the run is left out
    "summary params negative": (_summary_field("params", -5), CORRUPT, "params holds -5, not a positive number"),
    "summary flops null": (_summary_field("flops", None), CORRUPT, "has no flops, but the run has completed"),
    "summary label null": (_summary_field("label", None), CORRUPT, "has no label, but the run has completed"),
    "summary label missing": (_drop_summary_field("label"), CORRUPT, "has no label, but the run has completed"),
    "summary tokens missing": (_drop_summary_field("tokens"), CORRUPT, "has no tokens, but the run has completed"),
    "summary final_val_loss NaN": (_summary_field("final_val_loss", float("nan")), CORRUPT,
                                   "final_val_loss holds NaN, not a positive number"),
    "summary final_val_loss a string": (_summary_field("final_val_loss", "low"), CORRUPT,
                                        'final_val_loss holds "low", not a positive number'),
    "summary only a status": (_write("summary", b'{"status": "completed"}'), CORRUPT,
                              "has no run_id, label, family, structure, width, params, train_flops_per_token, "
                              "tokens, flops, steps, schedule, final_val_loss, but the run has completed"),
    "summary status done": (_write("summary", b'{"status": "done"}'), CORRUPT, "status 'done' is not one of"),
    "summary another run's id": (_summary_field("run_id", "0123456789abcdef"), CORRUPT,  # copied from that run
                                 'run_id holds "0123456789abcdef", not the name of its run directory'),
    "config missing": (_remove("config"), CORRUPT, "missing, but the run has completed"),
    # an evaluation without a usable loss: that row is left out, the run's other evaluations and final loss kept
    "eval val_loss NaN": (_eval_loss(float("nan")), COMPLETED, "NaN); those rows are left out and the run's other 6"),
    "eval val_loss a string": (_eval_loss("low"), COMPLETED, '"low"); those rows are left out and the run\'s other 6'),
}
TRAINS = {"summary deleted", "killed after taking its lease", "torn lease"}  # train resumes or takes over the run
# each case runs status, a dry launch and a full report (about 4 s): these three (a corrupt run, a kept run with a
# bad row, a run without its config) stay in `make test-fast`, the rest run with the slow tests
FAST = {"truncated summary", "eval val_loss NaN", "config missing"}


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory) -> Path:
    """The tiny sweep (4 runs of a GPT-2 that trains in seconds, at a constant LR) as a sweep file."""
    path = tmp_path_factory.mktemp("sweep") / "tiny.yaml"
    path.write_text(yaml.safe_dump(SWEEP))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory, sweep_file):
    """A results root holding the tiny sweep's 4 runs, recorded as completed (without training them): each run's
    curve, at the trainer's evaluation steps, follows the law L(N_eff, tokens), so that each label's two widths
    give a loss frontier to fit (with one run of a label left out, the other label's still fits)."""
    root = tmp_path_factory.mktemp("store") / "results"
    runs = expand(OmegaConf.create(SWEEP), [f"results_root={root}"]).runs
    for r in runs:
        p, rdir = r.plan, run_dir(root, r.plan.run_id)
        rdir.mkdir(parents=True)
        atomic_write_bytes(rdir / "config.yaml", OmegaConf.to_yaml(r.cfg).encode())
        n_eff = p.train_flops_per_unit / 6
        curve = [{"kind": "eval", "step": s, "tokens": float(s * p.units_per_step),
                  "flops": float(s * p.units_per_step * p.train_flops_per_unit),
                  "val_loss": law_loss(n_eff, s * p.units_per_step), "wall_s": 0.1 * s}
                 for s in eval_steps(p.steps, r.cfg.train.eval_points) if s > 0]  # the law has no value at 0 tokens
        append_jsonl(rdir / "metrics.jsonl", curve)
        atomic_write_json(rdir / "summary.json", {
            "run_id": p.run_id, "status": "completed", "sweep": "tiny", "label": r.label.split()[0],
            "family": p.family, "structure": p.structure, "width": p.width, "params": p.params,
            "train_flops_per_token": p.train_flops_per_unit, "tokens": p.units, "flops": p.train_flops,
            "final_val_loss": curve[-1]["val_loss"], "steps": p.steps, "schedule": r.cfg.train.schedule})
    return {"root": root, "sweep_file": sweep_file, "runs": runs}


def train_args(planned, root: Path) -> list[str]:
    """The train command line of a planned run of the tiny sweep (its budget is the sweep's, not the default)."""
    args = [*planned.overrides, "train.tokens=4096", f"results_root={root}"]
    assert run_id(compose_run_config(args)) == planned.plan.run_id
    return args


def one_line(text: str, needle: str) -> str:
    """The one line of `text` holding `needle` (asserted to be exactly one)."""
    lines = [line for line in text.splitlines() if needle in line]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize("case", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in BAD_RUNS])
def test_a_bad_run_is_named_in_one_line_and_every_command_carries_on(store, tmp_path, capsys, case):
    spoil, state, problem = BAD_RUNS[case]
    root = tmp_path / "results"
    shutil.copytree(store["root"], root)
    bad = store["runs"][0]
    rid = bad.plan.run_id
    path = spoil(RunPaths(run_dir(root, rid)))
    sweep = [f"+sweep={store['sweep_file']}", f"results_root={root}"]
    capsys.readouterr()

    # status: the count line, and for a bad run one line naming the file, what is wrong and the fix; exit 1
    code = status_main(sweep)
    out = capsys.readouterr().out
    assert ("4 runs: completed 4" if state == COMPLETED else f"4 runs: completed 3, {state} 1") in out
    if state == CORRUPT:
        line = one_line(out, rid)
        assert code == 1 and line.startswith(f"  corrupt {rid}: {path}: ") and problem in line
        assert "delete" in line or "restore" in line  # the fix
    else:
        assert code == 0 and rid not in out

    # launch (dry run): a bad run is skipped in one line, the others are decided as ever
    code = launch_main([*sweep, "dry_run=true", "estimate_time=false"])
    captured = capsys.readouterr()
    assert code == 0 and f"{int(state == PENDING)} to run" in captured.out
    if state == CORRUPT:
        assert one_line(captured.err, rid).startswith(f"  skipped {rid}: {path}: ")
    else:
        assert rid not in captured.err

    # the report of every other run is written; the bad run is named in one line (a kept run: its bad rows)
    out_dir = tmp_path / "report"
    code = analysis_main(["report", "--results", str(root), "--out", str(out_dir), *REPORT_ARGS])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    line = one_line(captured.err, rid)
    assert (out_dir / "report.md").is_file()
    assert json.loads((out_dir / "fits.json").read_text())["sweeps"] == ["tiny"]  # no "(no sweep)" of bad runs
    reported = set(pd.read_parquet(out_dir / "runs.parquet")["run_id"])
    if state == COMPLETED:
        assert line.startswith(f"warning: run {rid}: {path}: 1 of 7 eval rows have no usable val_loss (step ")
        assert problem in line and "delete the run directory" in line
        assert reported == {r.plan.run_id for r in store["runs"]}
        evals = pd.read_parquet(out_dir / "curves.parquet")
        assert len(evals[evals["run_id"] == rid]) == 6 and evals["val_loss"].notna().all()
    else:
        assert line.startswith(f"warning: run {rid} left out: {path}") and problem in line
        assert reported == {r.plan.run_id for r in store["runs"][1:]}

    # train: a bad run is refused in one line (its files are left for the user); a pending one is trained, a kept
    # one is finished already
    before = {p.name: p.read_bytes() for p in RunPaths(run_dir(root, rid)).dir.iterdir() if p.is_file()}
    code = train_main(train_args(bad, root))
    captured = capsys.readouterr()
    after = {p.name: p.read_bytes() for p in run_dir(root, rid).iterdir() if p.is_file()}
    if state == CORRUPT:
        assert code == 2 and captured.err.count("\n") == 1 and captured.err.startswith(f"error: {path}: {problem}")
        assert after == before
    elif state == COMPLETED:
        assert code == 0 and captured.err == "" and after == before
    else:
        assert code == 0 and read_summary(run_dir(root, rid))["status"] == "completed"
        if case == "torn lease":
            assert one_line(captured.err, "lease.json").startswith(
                f"warning: {RunPaths(run_dir(root, rid)).lease}: unreadable (empty or half-written)")


def test_the_default_report_leaves_out_a_sweep_with_no_usable_run_in_one_line(store, tmp_path, capsys):
    """A lone run of no sweep that is still running no longer takes down the report of every sweep."""
    root = tmp_path / "results"
    shutil.copytree(store["root"], root)
    atomic_write_json(run_dir(root, "0" * 16) / "summary.json", {"run_id": "0" * 16, "status": "running"})
    code = analysis_main(["report", "--results", str(root), "--out", str(tmp_path / "out"), *REPORT_ARGS])
    err = capsys.readouterr().err
    assert code == 0 and one_line(err, "(no sweep)") == \
        "warning: sweep (no sweep) left out: no usable runs; excluded 1 of 1 runs: 1 status running"
    assert json.loads((tmp_path / "out" / "fits.json").read_text())["sweeps"] == ["tiny"]
    # named, it is still an error: one line, exit 2
    code = analysis_main(["report", "--results", str(root), "--out", str(tmp_path / "out2"), "--sweep",
                          "(no sweep)", *REPORT_ARGS])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no usable runs" in err


def test_a_run_trained_on_another_machine_passes_the_config_check(tmp_path):
    """config.yaml keeps `device: auto`: a run whose id was taken on a CUDA machine is its run on a CPU one too."""
    cfg = compose_run_config([*TINY_BASE, f"results_root={tmp_path}"])
    assert cfg.train.device == "auto" and run_id(cfg, cuda=True) != run_id(cfg, cuda=False)
    for cuda in (True, False):
        rdir = run_dir(tmp_path, run_id(cfg, cuda=cuda))
        rdir.mkdir(parents=True)
        atomic_write_bytes(RunPaths(rdir).config, OmegaConf.to_yaml(cfg).encode())
        assert read_summary(rdir) is None  # checked, and no summary yet


# --- results-root faults ---------------------------------------------------------------------------------------


@pytest.fixture
def faults(tmp_path):
    """Make a fault under tmp_path by name; returns (the folder to pass, the words the error line must hold).
    Mounts and immutable flags are undone afterwards."""
    mounts, immutable = [], []

    def tmpfs(name: str, *options: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no mount command: the read-only and full-disk cases need a real tmpfs")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(["size=64k", *options]), "tmpfs",
                               str(target)], capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}): these cases need root (CAP_SYS_ADMIN), "
                        "as in CI")
        mounts.append(target)
        return target

    def make(fault: str) -> tuple[str, list[str]]:
        if fault == "empty":
            return "", ["results_root='' is empty", "set results_root=DIR"]
        if fault in ("a file", "under a file"):
            (tmp_path / "afile").write_text("not a folder")
            if fault == "a file":
                return str(tmp_path / "afile"), [f"results_root={tmp_path / 'afile'} is a file, not a folder"]
            return str(tmp_path / "afile" / "sub"), [f"results_root={tmp_path / 'afile' / 'sub'} lies under "
                                                     f"{tmp_path / 'afile'}, which is a file"]
        if fault == "a symlink loop":
            (tmp_path / "loop").symlink_to(tmp_path / "loop")
            loop = tmp_path / "loop"
            return str(loop), [f"results_root={loop} cannot be used as a folder (Symlink loop",
                               "set results_root=DIR to a folder path"]
        if fault == "a name too long":
            return str(tmp_path / ("x" * 300)), ["cannot be used as a folder (File name too long)",
                                                 "set results_root=DIR to a folder path"]
        if fault == "runs/ a file":
            (tmp_path / "root").mkdir()
            (tmp_path / "root" / "runs").write_text("not a folder")
            return str(tmp_path / "root"), [f"{tmp_path / 'root' / 'runs'} is a file, not the folder of runs",
                                            "move the file"]
        if fault in ("read-only", "read-only, to be created"):
            ro = tmpfs("ro", "ro")
            if fault == "read-only":
                return str(ro), [f"results_root={ro}: cannot write a file there: Read-only file system",
                                 "set results_root=DIR to a writable folder"]
            return str(ro / "sub"), [f"results_root={ro / 'sub'}: cannot write a file there (in {ro}, where it "
                                     "would be created): Read-only file system"]
        if fault == "immutable":
            folder = tmpfs("imm") / "results"
            folder.mkdir()
            proc = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True) \
                if shutil.which("chattr") else None
            if proc is None or proc.returncode:
                pytest.skip(f"cannot set chattr +i here ({proc.stderr.strip() if proc else 'no chattr command'}): "
                            "needs root (CAP_LINUX_IMMUTABLE)")
            immutable.append(folder)
            return str(folder), [f"results_root={folder}: cannot write a file there: Operation not permitted",
                                 "chattr -i"]
        assert fault == "full"
        full = tmpfs("full")
        with open(full / "fill", "wb") as f:
            with pytest.raises(OSError, match="No space left"):
                f.write(b"\0" * 128 * 1024)
                f.flush()
        return str(full), [f"results_root={full}: cannot write a file there: No space left on device",
                           "the disk is full"]

    yield make
    for folder in immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    for target in reversed(mounts):
        subprocess.run(["umount", str(target)], check=True)


def _tree(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))


WRITING = ("train", "launch", "launch dry run", "report --out")  # write into the folder (the report: into --out)
READING = ("status", "report --results")
ROOT_FAULTS = ("empty", "a file", "under a file", "read-only", "read-only, to be created", "immutable", "full",
               "a symlink loop", "a name too long", "runs/ a file")  # the last three: issue 23's second table
NOT_A_FOLDER = ("empty", "a file", "under a file", "a symlink loop", "a name too long", "runs/ a file")


def run_command(command: str, root: str, sweep_file: Path, tmp_path: Path) -> int:
    sweep = [f"+sweep={sweep_file}", f"results_root={root}"]
    if command == "train":
        return train_main([*TINY_BASE, "train.tokens=4096", f"results_root={root}"])
    if command.startswith("launch"):
        return launch_main([*sweep, *(["dry_run=true"] if "dry" in command else [])])  # a dry run writes a cache
    if command == "status":
        return status_main(sweep)
    if command == "report --out":
        return analysis_main(["report", "--results", str(tmp_path), "--out", root, *REPORT_ARGS])
    return analysis_main(["report", "--results", root, "--out", str(tmp_path / "out"), *REPORT_ARGS])


def as_flag(words: list[str], command: str) -> list[str]:
    """The error's words as the analysis CLI names its arguments (results_root=X -> --out X or --results X)."""
    flag = {"report --out": "--out", "report --results": "--results"}.get(command)
    if flag is None:
        return words
    return [w.replace("set results_root=DIR", f"set {flag} DIR").replace("results_root=", f"{flag} ", 1)
            if w.startswith(("results_root=", "set results_root=")) else w for w in words]


@pytest.mark.parametrize("fault", ROOT_FAULTS)
@pytest.mark.parametrize("command", [*WRITING, *READING])
def test_a_results_root_that_cannot_be_used_is_one_line_and_exit_2(faults, sweep_file, tmp_path, capsys, command,
                                                                   fault):
    root, words = faults(fault)
    before = _tree(tmp_path)
    code = run_command(command, root, sweep_file, tmp_path)
    captured = capsys.readouterr()
    if command in READING and fault not in NOT_A_FOLDER:  # reading needs no writable folder
        if command == "status":
            assert code == 0 and captured.err == "" and "4 runs: pending 4" in captured.out
        else:
            assert code == 2 and captured.err.count("\n") == 1 and "no runs/ directory there" in captured.err
    else:
        assert code == 2 and captured.err.count("\n") == 1 and captured.err.startswith("error: "), captured.err
        assert all(w in captured.err for w in as_flag(words, command)), (captured.err, words)
    assert _tree(tmp_path) == before  # nothing created


@pytest.mark.slow  # trains until the checkpoint no longer fits
def test_a_disk_that_fills_up_during_a_run_fails_it_in_one_line(tmp_path, capsys):
    root = tmp_path / "small"
    root.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(root)], capture_output=True,
                          text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}): needs root (CAP_SYS_ADMIN), as in CI")
    try:
        code = train_main([*TINY_BASE, "train.tokens=4096", f"results_root={root}"])
        err = capsys.readouterr().err
        rdir = next((root / "runs").iterdir())
        assert code == 2 and err.count("\n") == 1
        assert err == f"error: {rdir / 'checkpoint.pt'}: No space left on device; the disk is full: free space " \
                      "there or set results_root=DIR to a folder on another disk\n"
        summary = read_summary(rdir)
        assert summary["status"] == "failed" and "No space left on device" in summary["error"]
        assert not list(rdir.glob(".*.tmp"))  # the temp file of the write that failed is gone
    finally:
        subprocess.run(["umount", str(root)], check=True)
