"""`python -m analysis plan-next`: the next round's sizes centre on each label's N*(C), its tokens follow from the
FLOPs, the file loads and dry-runs as a sweep with the first round's labels, the report shows whether each isoFLOP
minimum is interior, and bad input is one error line with nothing written."""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from analysis.cli import main
from analysis.errors import AnalysisError
from analysis.io.load import load_sweeps, table_from_records
from analysis.report.markdown import markdown
from analysis.plan_next import first_round, plan_next, sweep_text
from analysis.report.build import analyse
from analysis.io.synthetic import HOFFMANN, Law, SyntheticStructure, SyntheticSweep
from scaling.store.results import atomic_write_bytes, atomic_write_json, append_jsonl, run_dir
from scaling.launch.sweeps import compose_launch_config, expand

REPO = Path(__file__).resolve().parents[2]
BTT_LAW = Law(E=1.69, A=300.0, B=410.7, alpha=0.34, beta=0.28)
LAWS = {"dense": HOFFMANN, "btt": BTT_LAW}
BUDGETS = (1.28e15, 2.56e15)  # the first round's largest budget is 6.4e14
BASE = ["model=gpt2", "data=shakespeare", "model.depth=4", "model.head_dim=8", "model.base_width=64",
        "train.batch_size=16", "logger.mode=disabled"]
RUN_OVERRIDES = ["train.eval_points=4"]  # given on the first round's launch command line (in its manifest)
REPLICATES = ["--replicates", "50", "--workers", "1"]


def first_sweep(name: str, labels: dict[str, list[str]]) -> dict:
    return {"name": name, "base": BASE, "axes": {"train.lr": [0.003], "model.width": [64, 128]},
            "variants": {lab: {"overrides": o} for lab, o in labels.items()}, "budgets": {"flops": [1e13]}}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Sweep files (synthetic: dense + btt with known laws; thin: two sizes per budget) and their results."""
    root = tmp_path_factory.mktemp("plan_next")
    (root / "sw").mkdir()
    (root / "sw" / "synthetic.yaml").write_text(yaml.safe_dump(first_sweep(
        "synthetic", {"dense": ["structure=dense"], "btt": ["structure=btt", "structure.rank=1"]})))
    (root / "sw" / "thin.yaml").write_text(yaml.safe_dump(first_sweep("thin", {"dense": ["structure=dense"]})))
    ids = SyntheticSweep([SyntheticStructure("dense", HOFFMANN), SyntheticStructure("btt", BTT_LAW)], diverged=0,
                         sigma_run=0.003).write(root / "res")
    atomic_write_json(root / "res" / "sweeps" / "synthetic.json",
                      {"name": "synthetic", "overrides": RUN_OVERRIDES, "runs": [{"run_id": i} for i in ids]})
    SyntheticSweep([SyntheticStructure("dense", HOFFMANN)], budgets=(1e13, 4e13, 1.6e14), sizes_per_budget=2,
                   diverged=0, name="thin").write(root / "res")
    return root


@pytest.fixture(scope="module")
def planned(store) -> tuple[Path, str]:
    """`plan-next` on the synthetic sweep, as a user runs it: the file it wrote and what it printed."""
    out = store / "next" / "synthetic_next.yaml"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["plan-next", "--sweep", "synthetic", "--budgets", *map(str, BUDGETS), "--results",
                     str(store / "res"), "--sweep-dir", str(store / "sw"), "--out", str(out), *REPLICATES])
    assert code == 0
    return out, printed.getvalue()


def expanded(path: Path):
    return expand(compose_launch_config([f"+sweep={path.stem}", f"sweep_dir={path.parent}"]).sweep).runs


@pytest.mark.slow  # plan-next's fits, then planning every run of the next round
def test_planned_sizes_centre_on_the_known_size_law(planned):
    runs = expanded(planned[0])
    for label, law in LAWS.items():
        for c in BUDGETS:
            mine = [r for r in runs if r.cfg.label == label and math.isclose(r.cfg.train.flops, c)]
            n = np.array([r.plan.train_flops_per_unit / 6 for r in mine])
            truth = float(law.n_opt(c))
            assert len(set(n)) == len(n) >= 4, (label, c)
            assert abs(math.log(np.exp(np.log(n).mean()) / truth)) < math.log(1.1), (label, c)
            assert n.min() < truth / 1.8 and n.max() > truth * 1.8  # at least ~2x each side: the minimum is inside
            for r in mine:  # tokens x training FLOPs per token = C, to within the last optimiser step
                per_step = r.plan.units_per_step * r.plan.train_flops_per_unit
                assert 0 <= r.plan.units * r.plan.train_flops_per_unit - c < per_step
                assert r.cfg.model.width % 8 == 0


@pytest.mark.slow  # plan-next's fits, then planning every run of the next round
def test_next_sweep_keeps_the_first_rounds_labels_and_says_where_sizes_came_from(planned, store):
    path, printed = planned
    text = path.read_text()
    spec = OmegaConf.to_container(OmegaConf.load(path))
    first = yaml.safe_load((store / "sw" / "synthetic.yaml").read_text())
    assert spec["name"] == "synthetic_next" and list(spec["variants"]) == list(first["variants"])
    assert spec["base"] == BASE + RUN_OVERRIDES and spec["axes"] == {"train.lr": [0.003]}
    assert "budgets" not in spec
    for label, variant in spec["variants"].items():
        assert variant["overrides"] == first["variants"][label]["overrides"]
        assert [rung["flops"] for rung in variant["ladder"]] == list(BUDGETS)
    runs = expanded(path)
    assert {str(r.cfg.label) for r in runs} == set(LAWS) and {r.cfg.train.eval_points for r in runs} == {4}
    header = [line for line in text.splitlines() if line.startswith("#")]
    for label in LAWS:
        law = next(line for line in header if line.startswith(f"# {label}: N*(C) = "))
        assert "from the isoflop fit, status ok" in law
        for c in BUDGETS:
            assert any(line.startswith(f"#   C = {c:.3g}: N* = ") and "-> widths" in line for line in header)
    assert "flops: 1.28e+15" in text  # a readable float
    assert f"wrote {path}" in printed and f"sweep_dir={path.parent}" in printed


@pytest.mark.slow  # plan-next's fits, then a launcher process
def test_next_sweep_dry_runs_through_the_launcher(planned, tmp_path):
    path = planned[0]
    result = subprocess.run([sys.executable, "-m", "scaling.launch", f"+sweep={path.stem}", f"sweep_dir={path.parent}",
                             "dry_run=true", "estimate_time=false", f"results_root={tmp_path}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if " pending " in line]
    assert len(rows) == len(expanded(path)) and {line.split()[2] for line in rows} == set(LAWS)


def write_round(root: Path, name: str, runs, laws: dict[str, Law]) -> None:
    """Run directories for planned runs, losses from each label's law (cosine schedule: read at its end only)."""
    for r in runs:
        p, cfg = r.plan, OmegaConf.to_container(r.cfg, resolve=True)
        n, tokens = p.train_flops_per_unit / 6, p.units * np.geomspace(1 / 8, 1, 4)
        loss = laws[cfg["label"]].loss(n, tokens)
        rdir = run_dir(root, p.run_id)
        rdir.mkdir(parents=True)
        atomic_write_bytes(rdir / "config.yaml", OmegaConf.to_yaml(r.cfg).encode())
        append_jsonl(rdir / "metrics.jsonl", [{"kind": "eval", "step": i + 1, "tokens": float(t),
                                               "flops": float(t * p.train_flops_per_unit), "val_loss": float(v),
                                               "wall_s": float(t * p.train_flops_per_unit * 1e-9)}
                                              for i, (t, v) in enumerate(zip(tokens, loss))])
        atomic_write_json(rdir / "summary.json", {
            "run_id": p.run_id, "status": "completed", "sweep": name, "label": cfg["label"], "family": p.family,
            "structure": p.structure, "width": p.width, "depth": cfg["model"]["depth"], "lr": cfg["train"]["lr"],
            "seed": cfg["train"]["seed"], "params": p.params, "params_nonembed": p.params_nonembed,
            "train_flops_per_token": p.train_flops_per_unit, "tokens": p.units, "flops": p.train_flops,
            "final_val_loss": float(loss[-1]), "wall_time_s": p.train_flops * 1e-9, "steps": p.steps,
            "schedule": cfg["train"]["schedule"], "batch_size": cfg["train"]["batch_size"]})


@pytest.mark.slow  # plan-next's fits, then planning every run of the next round
def test_second_round_minima_are_interior_and_the_rounds_compare(planned, store, tmp_path):
    results = tmp_path / "res"
    write_round(results, "synthetic_next", expanded(planned[0]), LAWS)
    for rdir in (store / "res" / "runs").iterdir():  # the first round beside it
        shutil.copytree(rdir, results / "runs" / rdir.name)
    report = analyse(load_sweeps(results, ["synthetic", "synthetic_next"]), replicates=50, workers=1)
    text = markdown(report, {}, tmp_path)
    assert "## Sweeps side by side" in text
    rows = minima_rows(text[text.index("## `synthetic_next: gpt2/shakespeare`"):])
    assert {(row[0], row[1]) for row in rows} == {(lab, f"{c:.3g}") for lab in LAWS for c in BUDGETS}
    assert all(row[4] == "yes" for row in rows)


@pytest.mark.slow  # plan-next's fits, then planning every run of the next round
def test_rounds_are_read_as_one_experiment(planned, store, tmp_path):
    results = tmp_path / "res"
    write_round(results, "synthetic_next", expanded(planned[0]), LAWS)
    for rdir in (store / "res" / "runs").iterdir():
        shutil.copytree(rdir, results / "runs" / rdir.name)
    shutil.copytree(store / "res" / "sweeps", results / "sweeps")
    apart = load_sweeps(results, ["synthetic", "synthetic_next"])
    together = load_sweeps(results, ["synthetic", "synthetic_next"], rounds=True)
    assert list(together) == ["synthetic+synthetic_next"]
    merged = set(together["synthetic+synthetic_next"].runs["run_id"])
    assert merged == set(apart["synthetic"].runs["run_id"]) | set(apart["synthetic_next"].runs["run_id"])
    report = analyse(together, replicates=50, workers=1)
    rows = minima_rows(markdown(report, {}, tmp_path))
    assert {row[1] for row in rows} >= {f"{c:.3g}" for c in BUDGETS}
    assert len({row[1] for row in rows}) > len(BUDGETS)  # the first round's budgets join the fit
    assert all(row[4] == "yes" for row in rows if row[1] in {f"{c:.3g}" for c in BUDGETS})
    with pytest.raises(AnalysisError,
                       match=r"rounds=True: name two or more sweeps with `names` \(got \['synthetic'\]\)"):
        load_sweeps(results, ["synthetic"], rounds=True)
    with pytest.raises(AnalysisError, match="names=nope: no such sweep under"):
        load_sweeps(results, ["synthetic", "nope"], rounds=True)
    shared = sorted(apart["synthetic"].runs["run_id"])[0]
    for name, variant in (("one", "dense"), ("two", "dense_r2")):
        atomic_write_json(results / "sweeps" / f"{name}.json",
                          {"name": name, "runs": [{"run_id": shared, "variant": variant}]})
    with pytest.raises(AnalysisError, match=f"rounds=True: run {shared} is 'dense' in one round and 'dense_r2' in two"):
        load_sweeps(results, ["one", "two"], rounds=True)


def minima_rows(text: str) -> list[list[str]]:
    """The cells of the first isoFLOP minimum-per-budget table in `text`."""
    table = text[text.index("| label | C | sizes | N*_eff | interior | note |"):].split("\n\n")[0]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]


def test_isoflop_table_says_when_a_minimum_is_not_interior():
    sweep = SyntheticSweep([SyntheticStructure("dense", HOFFMANN)], diverged=0, repeat_seeds=1, sizes_per_budget=9)
    top = max(sweep.budgets)  # keep only its sizes well below N*: the loss falls to the largest one
    kept = [r for r in sweep.records()
            if not (math.isclose(r.summary["flops"], top) and r.summary["params"] > HOFFMANN.n_opt(top) / 2.5)]
    report = analyse({"synthetic": table_from_records(kept)}, replicates=50, workers=1)
    rows = minima_rows(markdown(report, {}, Path(".")))
    # the note names the measured side that is missing (interior is now judged on measured sizes, issue 22)
    assert [row[4:] for row in rows if row[1] == f"{top:.3g}"] == [
        ["no", "argmin at the largest N (no larger measured size has a higher loss): dropped"]]
    assert len(rows) >= len(sweep.budgets) and all(row[4:] == ["yes", ""] for row in rows if row[1] != f"{top:.3g}")


def test_a_failed_size_law_is_refused_unless_allowed(store):
    report = analyse(load_sweeps(store / "res", ["thin"]), replicates=50, workers=1)
    first = first_round("thin", [str(store / "sw")])
    with pytest.raises(AnalysisError) as err:
        plan_next(report, store / "res", "thin", [1e15], "thin_next", first=first)
    message = str(err.value)
    assert message.startswith("label dense: its size law N*(C) (isoFLOP fit) is failed: ")
    assert "needs 2 or more budgets with an interior optimum" in message and "allow_weak=True" in message
    plan = plan_next(report, store / "res", "thin", [1e15], "thin_next", allow_weak=True, first=first)
    law = plan.laws["dense"]
    assert law.fit == "parametric" and law.status.status == "weak"
    assert "from the parametric fit, status weak: isoFLOP fit failed" in sweep_text(plan, "plan-next ...")


@pytest.mark.parametrize("args, message", [
    (["--budgets", "0"], "--budgets 0: every budget must be a positive number of training FLOPs"),
    (["--budgets", "1e15", "-2.5"], "--budgets 1e+15 -2.5: every budget must be a positive number"),
    (["--budgets", "1e15", "--sizes", "2"], "--sizes 2: an isoFLOP minimum needs 3 or more sizes"),
    (["--sweep", "nope", "--budgets", "1e15"], "--sweep nope: no sweep file declares it in"),
    (["--sweep", "quickstart", "--budgets", "1e15"], "--sweep quickstart: no such sweep under"),
    (["--budgets", "1e15", "--results", "{tmp}/nothing"], "no runs/ directory there"),
    (["--budgets", "1e15", "--out", "{tmp}/exists.yaml"], "exists.yaml exists; pass --force to overwrite it"),
    (["--budgets", "1e15", "--out", "{tmp}/synthetic.yaml"], "the next round needs a name of its own"),
    (["--budgets", "1e15", "--out", "{tmp}/next.txt"], "a sweep file ends in .yaml"),
])
def test_bad_arguments_are_one_error_line_and_write_nothing(store, tmp_path, capsys, args, message):
    (tmp_path / "exists.yaml").write_text("kept\n")
    argv = ["plan-next", "--sweep", "synthetic", "--results", str(store / "res"), "--sweep-dir", str(store / "sw"),
            "--out", str(tmp_path / "next.yaml"), *REPLICATES]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.yaml"]
    assert (tmp_path / "exists.yaml").read_text() == "kept\n"


@pytest.mark.slow
def test_plans_from_real_tiny_run_directories(tmp_path, one_thread):
    """Real training: a tiny dense isoFLOP round, then plan-next at a 4x larger budget; the plan expands."""
    from scaling.launch.submit import launch

    sweep = {"name": "tiny_round", "base": ["model=gpt2", "model.base_width=32", "model.depth=1", "model.head_dim=8",
                                            "model.context=32", "train.batch_size=8", "train.lr=0.01",
                                            "train.eval_points=4", "train.schedule=constant", "logger.mode=disabled",
                                            "train.warmup_tokens=512"],  # 2 steps: shorter than these tiny runs
             "axes": {"model.width": [16, 24, 32, 48, 64]},
             "variants": {"dense": {"overrides": ["structure=dense"]}},
             "budgets": {"flops": [2e9, 8e9, 3.2e10]}}
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "tiny_round.yaml").write_text(yaml.safe_dump(sweep))
    cfg = compose_launch_config(["+sweep=tiny_round", f"sweep_dir={tmp_path / 'sw'}", f"results_root={tmp_path}",
                                 "cluster=debug"])
    launch(cfg)
    out = tmp_path / "sw" / "tiny_round_next.yaml"
    assert main(["plan-next", "--sweep", "tiny_round", "--budgets", "1.28e11", "--results", str(tmp_path),
                 "--sweep-dir", str(tmp_path / "sw"), "--out", str(out), "--allow-weak", "--loss-noise", "0.01",
                 *REPLICATES]) == 0
    runs = expanded(out)
    assert {str(r.cfg.label) for r in runs} == {"dense"} and len(runs) >= 3
    for r in runs:
        assert 0 <= r.plan.train_flops - 1.28e11 < r.plan.units_per_step * r.plan.train_flops_per_unit
    assert "# dense: N*(C) = " in out.read_text()
