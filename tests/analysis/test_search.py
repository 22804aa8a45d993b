"""Search files are validated before anything runs, and a tiny real search runs end to end and resumes without
training anything twice."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.fit.bootstrap import Interval
from analysis.plan_next import WidthPlanner, targets
from analysis.search.cli import main
from analysis.search.spec import SearchError, load_search, parse, search_files

TINY = {
    "name": "tiny_search",
    "base": ["model=gpt2", "model.base_width=32", "model.depth=1", "model.head_dim=8", "model.context=32",
             "train.batch_size=8", "train.lr=0.01", "train.eval_points=4", "train.schedule=constant",
             "logger.mode=disabled"],
    "budget": 4.0e9, "allowance": 1.0e11, "reference": ["structure=dense"],
    "structures": {"btt": ["structure=btt", "structure.rank=1"]},
    "theta": {"low_rank_half": [1, 0, 0, 0, 1, 0, 0.5]},
    "rounds": [{"fraction": 0.5, "keep": 0.5}, {"fraction": 1.0}],
    "sizes": 3, "tokens_per_param": 2, "replicates": 20,
    "lr_check": {"values": [0.005, 0.01, 0.02], "labels": ["low_rank_half"]},
}


def test_the_shipped_search_has_twenty_theta_points_at_the_taxonomy_sweeps_top_budget():
    spec = load_search("structure_search")
    assert "structure_search" in search_files()
    theta = [c for c in spec.candidates if c.theta is not None]
    assert len(theta) >= 20
    assert spec.budget == 3.2e11 and spec.stages[-1].flops == 3.2e11
    assert len({c.coords for c in theta}) == len(theta)  # every point its own (omega, psi, nu)
    assert {c.label for c in spec.candidates if c.theta is None} == {"btt", "monarch", "low_rank", "kron"}
    assert spec.candidate("btt_low_rank").coords == pytest.approx((0.0, 2 / 3, 1 / 3), abs=1e-6)
    assert spec.lr_cost + spec.cost(spec.stages[0], len(spec.candidates)) <= spec.allowance


def test_costs_count_dense_and_the_lr_check():
    spec = parse(dict(TINY))
    assert spec.cost(spec.stages[0], 2) == 3 * 3 * 1 * 2e9
    assert spec.lr_cost == 3 * 2e9
    assert spec.full_grid() == 3 * 3 * (2e9 + 4e9) + 3 * 3 * 2e9


@pytest.mark.parametrize("change, words", [
    ({"rounds": [{"fraction": 0.5}, {"fraction": 0.25}]}, "rounds[1].fraction=0.25: round budgets must increase"),
    ({"rounds": [{"fraction": 0.5}]}, "end at fraction 1.0"),
    ({"rounds": [{"fraction": 1.0, "keep": 2}]}, "rounds[0].keep=2"),
    ({"theta": {"x": [1, 0, 0]}}, "theta.x=[1, 0, 0]: theta is 7 numbers"),
    ({"structures": {"dense": ["structure=dense"]}}, "label(s) ['dense'] used twice"),
    ({"lr_check": {"values": [0.01, 0.01, 0.02], "labels": "all"}}, "give 3 distinct learning rates"),
    ({"lr_check": {"values": [0.005, 0.01, 0.02], "labels": ["nope"]}}, "['nope'] are not candidates"),
    ({"allowance": 1e9}, "allowance=1e+09: the LR check and the first round alone need 2.4e+10"),
    ({"budget": -1}, "budget=-1: must be a positive number"),
    ({"sizes": 2}, "sizes=2: must be an integer of at least 3"),
    ({"seeds": 2}, "unknown key(s) ['seeds']"),
])
def test_a_bad_search_file_is_one_line_naming_the_field(change, words):
    with pytest.raises(SearchError) as err:
        parse({**TINY, **change})
    assert words in str(err.value) and "\n" not in str(err.value)


def test_the_command_refuses_bad_input_with_status_2_before_creating_anything(tmp_path, capsys):
    root = tmp_path / "results"
    assert main(["+search=no_such_search", f"results_root={root}"]) == 2
    assert "+search=no_such_search: no such search" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**TINY, "sizes": 1}))
    assert main([f"+search={tmp_path / 'bad.yaml'}", f"results_root={root}"]) == 2
    assert "sizes=1" in capsys.readouterr().err
    assert main([f"results_root={root}"]) == 2
    assert not root.exists()


def _finished(root: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (root / "runs").glob("*/summary.json")}


@pytest.mark.slow
def test_a_tiny_search_runs_end_to_end_and_resumes_without_training_twice(tmp_path, capsys):
    folder = tmp_path / "searches"
    folder.mkdir()
    (folder / "tiny_search.yaml").write_text(yaml.safe_dump(TINY))
    root, out = tmp_path / "results", tmp_path / "report"
    args = ["+search=tiny_search", f"search_dir={folder}", f"results_root={root}", f"out={out}", "cluster=debug",
            "workers=1"]
    assert main(args) == 0
    first = json.loads((out / "search.json").read_text())
    assert [r["candidates"] for r in first["rounds"]][0] == ["btt", "low_rank_half"]
    assert first["reached_final"] and first["winners"]
    assert set(first["winners"]) <= {"btt", "low_rank_half"}
    assert first["winners"] == first["rounds"][-1]["candidates"][:len(first["winners"])] or \
        first["winners"][0] in first["rounds"][-1]["candidates"]
    assert first["candidates"]["low_rank_half"]["coords"] == [0.0, 0.5, 0.5]
    assert first["candidates"]["low_rank_half"]["lr_source"] == "checked"
    assert first["candidates"]["btt"]["lr_source"] == "own"  # a named structure keeps its own LR
    manifests = [json.loads((root / "sweeps" / f"{n}.json").read_text()) for n in first["sweeps"]]
    assert first["sweeps"] == ["tiny_search_lr", "tiny_search_r1", "tiny_search_r2"]
    assert first["spent"] == pytest.approx(sum(r["flops"] for m in manifests for r in m["runs"]))
    assert first["spent"] <= first["allowance"] and first["spent"] < first["full_grid"]
    text = (out / "search.md").read_text()
    assert "## Verdict" in text and "loss advantage over dense" in text and "full grid" in text
    assert (out / "plots" / "taxonomy.png").stat().st_size > 0
    assert (out / "analysis" / "runs.csv").exists()
    trained = _finished(root)
    assert len(trained) == len({r["run_id"] for m in manifests for r in m["runs"]})

    capsys.readouterr()
    assert main(args) == 0  # rerun: every decision replayed from disk, nothing trained again
    assert _finished(root) == trained
    again = json.loads((out / "search.json").read_text())
    assert again["winners"] == first["winners"] and again["rounds"] == first["rounds"]

    # an edited search file: the runs its earlier version left under the same sweep names are not read
    (folder / "tiny_search.yaml").write_text(yaml.safe_dump(
        {**TINY, "lr_check": {"values": [0.004, 0.008, 0.016], "labels": ["low_rank_half"]}}))
    assert main(args) == 0
    edited = json.loads((out / "search.json").read_text())
    assert edited["candidates"]["low_rank_half"]["lr"] in (0.004, 0.008, 0.016)
    current = {r["run_id"] for n in edited["sweeps"]
               for r in json.loads((root / "sweeps" / f"{n}.json").read_text())["runs"]}
    used = set(pd.read_csv(out / "analysis" / "runs.csv")["run_id"])
    assert used <= current and len(_finished(root)) > len(used)


def test_a_candidate_with_no_runs_is_sized_by_its_flop_formulas():
    """plan_next's WidthPlanner seeds its width guess from the first widths that plan when there are no runs."""
    planner = WidthPlanner("low_rank_half", [*TINY["base"], "structure=einsum", "structure.theta=[1,0,0,0,1,0,0.5]"],
                           8, {})
    n_star = 1.29e4  # sqrt(2e9 / (6 * 2)), the first round's guess in the tiny search
    widths, n_eff = planner.choose(targets(Interval(n_star, n_star, n_star), 3)[0], 2e9)
    assert widths == [16, 32, 64]
    assert n_eff[0] <= n_star / 2 and n_eff[-1] >= n_star * 2


def test_sizes_below_the_smallest_valid_width_start_at_it():
    """A compute-optimal size smaller than the smallest width can give (tiny budgets) plans a ladder of the same span
    that starts at the smallest width, instead of failing."""
    planner = WidthPlanner("low_rank_half", [*TINY["base"], "structure=einsum", "structure.theta=[1,0,0,0,1,0,0.5]"],
                           8, {})
    smallest = planner.plan(8).train_flops_per_unit / 6
    widths, n_eff = planner.choose(targets(Interval(smallest / 3, smallest / 3, smallest / 3), 4)[0], 2e9)
    assert widths[0] == 8 and len(widths) >= 3 and n_eff[-1] >= 4 * smallest


def test_the_lr_check_sweeps_the_lr_of_candidates_that_set_their_own(tmp_path):
    """A candidate's own train.lr (the shipped search gives every one) is left out of its LR-check variant, whose
    axis sweeps the LR: the launcher refuses a variant overriding a swept key."""
    from analysis.search.driver import Driver

    spec = parse({**TINY, "structures": {"btt": ["structure=btt", "structure.rank=1", "train.lr=0.005"]},
                  "theta_overrides": ["train.lr=0.005"], "lr_check": {"values": [0.005, 0.01, 0.02], "labels": "all"}})
    driver = Driver(spec, str(tmp_path / "results"))
    sweep = driver.lr_sweep()
    assert all(not o.startswith("train.lr=") for v in sweep["variants"].values() for o in v["overrides"])
    driver.launch(sweep, dry_run=True)  # validates and expands; trains nothing
    assert sorted(sweep["variants"]) == ["btt", "dense", "low_rank_half"]  # `all` checks the baseline too
    assert driver.flops[sweep["name"]] == pytest.approx(3 * 3 * 2e9, rel=0.02)  # 3 LRs x 3 labels, whole steps
