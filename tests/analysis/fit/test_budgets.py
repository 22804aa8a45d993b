"""Budgets read from curves and hyperparameters inside a budget: log-log reads, final-only schedules, the
minimum (never the mean) over learning rates, and the CSV flags that drive them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.fit.budgets import budget_grid, declared_budgets, read_at_budgets
from analysis.cli import main
from analysis.fit.hparams import best_over_hparams
from analysis.io.synthetic import HOFFMANN
from analysis.fit.tables import isoflop_from_table


def test_budget_grid_groups_isoflop_finals_and_falls_back_to_a_factor_2_grid():
    np.testing.assert_allclose(budget_grid([1e12, 1.02e12, 0.99e12, 4e12, 4.1e12, 3.95e12]),
                               [np.exp(np.log([1e12, 1.02e12, 0.99e12]).mean()),
                                np.exp(np.log([4e12, 4.1e12, 3.95e12]).mean())])
    np.testing.assert_allclose(budget_grid([1.1e12, 3.3e12, 7.1e12, 1.6e13]), [2e12, 4e12, 8e12, 1.6e13])


def test_declared_read_budgets_join_the_finals_and_only_for_curve_readable_runs():
    finals = [4e12, 4.1e12, 3.95e12, 4.05e12]  # one isoFLOP group: every run trained to the largest budget
    assert len(budget_grid(finals)) == 1
    grid = budget_grid(finals, declared=[1e12, 2e12, 4e12])  # 4e12 is the finals' own group already
    np.testing.assert_allclose(grid, [1e12, 2e12, np.exp(np.log(finals).mean())])
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "eval_flops": ["1e12,2e12", "2e12", None]})
    np.testing.assert_allclose(declared_budgets(runs), [1e12, 2e12])
    np.testing.assert_allclose(declared_budgets(runs, final_only=frozenset({"a"})), [2e12])


def test_reads_interpolate_log_log_and_final_only_runs_read_at_their_end():
    curves = pd.DataFrame({"run_id": ["a"] * 3 + ["b"] * 3, "flops": [1e12, 4e12, 1.6e13] * 2,
                           "loss": [4.0, 2.0, 1.0, 4.0, 2.0, 1.0]})
    reads = read_at_budgets(curves, np.array([2e12, 1.6e13, 1.7e13, 1e14]), final_only={"b"})
    a = reads[reads["run_id"] == "a"].set_index("flops")["loss"]
    assert a.loc[2e12] == pytest.approx(np.sqrt(8.0))  # halfway in log C between 4 and 2, in log L too
    assert a.loc[1.6e13] == 1.0 and a.loc[1.7e13] == 1.0  # within 10% past the end reads the end
    assert 1e14 not in a.index
    b = reads[reads["run_id"] == "b"].set_index("flops")["loss"]
    assert list(b.index) == [1.6e13, 1.7e13] and set(b) == {1.0}  # decayed to its own end: no earlier read


def test_minimum_over_lr_and_mean_over_seeds():
    pts = pd.DataFrame({"flops": [1.0] * 5, "n": [10.0] * 5, "lr": [1e-3, 1e-3, 3e-3, 1e-2, 1e-2],
                        "loss": [2.0, 2.2, 1.5, 1.9, 1.9]})
    best = best_over_hparams(pts, "n", (), "lr")
    assert best["loss"].iloc[0] == pytest.approx(1.5) and best["settings"].iloc[0] == 3
    seeds = best_over_hparams(pts[pts["lr"] == 1e-3], "n", (), "lr")
    assert seeds["loss"].iloc[0] == pytest.approx(np.sqrt(2.0 * 2.2)) and seeds["seeds"].iloc[0] == 2
    # an Akima fit in log lr finds the minimum between measured lrs (true minimum 2.0 at lr 0.02)
    lrs = np.geomspace(1e-3, 1e-1, 5)
    bowl = pd.DataFrame({"flops": 1.0, "n": 10.0, "lr": lrs, "loss": 2 + 0.1 * np.log(lrs / 0.02) ** 2})
    interp = best_over_hparams(bowl, "n", (), "lr", interpolate=True)["loss"].iloc[0]
    assert interp == pytest.approx(2.0, abs=1e-3) and interp < bowl["loss"].min() - 0.01


def chinchilla_grid(rng, lr_penalty: float = 0.0, seeds: int = 1) -> pd.DataFrame:
    rows = []
    for c in np.geomspace(6e18, 3e21, 7):
        for f in np.geomspace(1 / 6, 6, 7):
            n = float(HOFFMANN.n_opt(c) * f)
            for lr, pen in ((3e-4, 0.0), (1e-3, lr_penalty)):
                for s in range(seeds):
                    loss = HOFFMANN.loss(n, c / (6 * n)) * (1 + pen * rng.uniform()) + rng.normal(0, 0.002)
                    rows.append({"params": n, "flops": c, "lr": lr, "seed": s, "loss": float(loss),
                                 "structure": "dense"})
    return pd.DataFrame(rows)


def test_a_worse_lr_row_per_point_does_not_move_the_exponent():
    df = chinchilla_grid(np.random.default_rng(0), lr_penalty=0.05)
    clean = isoflop_from_table(df[df["lr"] == 3e-4], "params", "loss", flops_col="flops", replicates=100,
                               loss_noise=0.002)
    minimised = isoflop_from_table(df, "params", "loss", flops_col="flops", lr_col="lr", replicates=100,
                                   loss_noise=0.002)
    averaged = isoflop_from_table(df, "params", "loss", flops_col="flops", replicates=100, loss_noise=0.002)
    assert minimised.a.value == pytest.approx(clean.a.value, abs=1e-12)
    assert abs(averaged.a.value - clean.a.value) > 1e-4  # what averaging lrs as seeds would have done


def test_run_col_reads_curves_at_every_budget(tmp_path, capsys):
    rows = []
    for i, n in enumerate(np.geomspace(2e8, 2e10, 9)):
        for d in np.geomspace(2e9, 2e12, 40):  # a constant-LR run's curve
            rows.append({"run": f"r{i}", "params": n, "flops": 6 * n * d,
                         "loss": float(HOFFMANN.loss(n, d)), "group": "dense"})
    path = tmp_path / "curves.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    assert main(["isoflop", "--csv", str(path), "--params-col", "params", "--flops-col", "flops", "--loss-col",
                 "loss", "--run-col", "run", "--loss-noise", "0.002", "--replicates", "100", "--group-col", "group",
                 "--json", "--out", str(tmp_path / "out")]) == 0
    import json
    fits = json.loads(capsys.readouterr().out)
    budgets = pd.DataFrame(fits["dense"]["budgets"])
    used = budgets[budgets["used"]]
    assert len(used) >= 6 and (used["points"] == 9).sum() >= 3  # every run read at several budgets
    assert fits["dense"]["a"]["lo"] < HOFFMANN.a < fits["dense"]["a"]["hi"]
    assert fits["dense"]["noise"]["source"] == "given: loss std 0.002"
    assert (tmp_path / "out" / "isoflop.png").is_file() and (tmp_path / "out" / "fits.json").is_file()


def test_bad_flags_name_the_flag(tmp_path, capsys):
    path = tmp_path / "t.csv"
    chinchilla_grid(np.random.default_rng(0)).to_csv(path, index=False)
    base = ["isoflop", "--csv", str(path), "--params-col", "params", "--flops-col", "flops", "--loss-col", "loss"]
    assert main(base + ["--lr-col", "learning_rate"]) == 2
    assert "--lr-col 'learning_rate': no such column" in capsys.readouterr().err
    assert main(base + ["--loss-noise", "-1"]) == 2
    assert "--loss-noise: -1 is out of range: give a positive finite number" in capsys.readouterr().err
    assert main(base + ["--group-col", "kind"]) == 2
    assert "--group-col 'kind': no such column" in capsys.readouterr().err


@pytest.mark.slow  # plans every run of the shipped btt_gpt2 sweep
def test_sweep_runs_evaluate_at_their_variants_smaller_budgets():
    from scaling.train.budget_evals import budget_steps
    from scaling.store.results import run_id
    from sweep_fixtures import shipped_runs

    runs = shipped_runs("btt_gpt2")
    for r in runs:
        mine = sorted({float(o.plan.train_flops) for o in runs if o.cfg.label == r.cfg.label
                       and o.plan.train_flops * 1.1 < r.plan.train_flops})  # within 10%: its own budget
        assert list(r.cfg.train.eval_flops) == mine
        steps = budget_steps(r.cfg.train.eval_flops, r.plan)
        per_step = r.plan.units_per_step * r.plan.train_flops_per_unit
        for c in mine:  # an evaluation within 10% of every smaller budget of the variant
            assert min(abs(s * per_step / c - 1) for s in steps) < 0.1
    r = runs[-1]
    before = run_id(r.cfg)
    r.cfg.train.eval_flops = []
    assert run_id(r.cfg) == before  # where a run evaluates is not part of its identity
