"""Reports per sweep and label: every shipped sweep's report builds from run directories of its planned runs,
variants of one structure are separate frontiers, --sweep selects, and a tiny real sweep reports both labels."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from analysis.cli import main
from analysis.io.load import load_sweeps
from analysis.report.build import analyse
from analysis.io.synthetic import HOFFMANN, SyntheticStructure, SyntheticSweep
from scaling.store.results import append_jsonl, atomic_write_bytes, atomic_write_json, run_dir
from scaling.launch.sweeps import compose_launch_config, sweep_names
from sweep_fixtures import shipped_runs

SHIPPED = ("btt_gpt2", "einsum_taxonomy", "lr_transfer", "mlp_cbs", "mlp_fashion_mnist", "moe_gpt2", "precision_check",
           "quickstart", "structures_gpt2", "vit_fashion_mnist")


def write_fixture(root, name: str, rng: np.random.Generator) -> list:
    """Run directories for every planned run of a shipped sweep (losses from a known law) and its manifest."""
    runs = list(shipped_runs(name))
    for r in runs:
        p, cfg = r.plan, OmegaConf.to_container(r.cfg, resolve=True)
        n = p.train_flops_per_unit / 6
        tokens = p.units * np.geomspace(1 / 16, 1, 6)
        lr_penalty = 1 + 0.02 * math.log2(cfg["train"]["lr"] / 3e-3) ** 2
        loss = (1.5 + 40 / n ** 0.3 + 60 / tokens ** 0.28) * lr_penalty * np.exp(rng.normal(0, 0.003, tokens.size))
        rdir = run_dir(root, p.run_id)
        rdir.mkdir(parents=True)
        atomic_write_bytes(rdir / "config.yaml", OmegaConf.to_yaml(r.cfg).encode())
        append_jsonl(rdir / "metrics.jsonl", [
            {"kind": "eval", "step": i + 1, "tokens": float(t), "flops": float(t * p.train_flops_per_unit),
             "val_loss": float(v), "wall_s": float(t * p.train_flops_per_unit * 1e-9)}
            for i, (t, v) in enumerate(zip(tokens, loss))])
        atomic_write_json(rdir / "summary.json", {
            "run_id": p.run_id, "status": "completed", "sweep": name, "label": cfg["label"], "family": p.family,
            "structure": p.structure, "width": p.width, "depth": cfg["model"]["depth"],
            "parametrization": cfg["model"]["parametrization"], "lr": cfg["train"]["lr"],
            "seed": cfg["train"]["seed"], "params": p.params, "params_nonembed": p.params_nonembed,
            "forward_flops_per_token": p.forward_flops_per_unit, "train_flops_per_token": p.train_flops_per_unit,
            "tokens": p.units, "tokens_target": p.units, "flops": p.train_flops, "final_val_loss": float(loss[-1]),
            "best_val_loss": float(loss.min()), "wall_time_s": p.train_flops * 1e-9, "steps": p.steps,
            "schedule": cfg["train"]["schedule"], "batch_size": cfg["train"]["batch_size"]})
    atomic_write_json(root / "sweeps" / f"{name}.json",
                      {"name": name, "runs": [{"run_id": r.plan.run_id, "label": r.label} for r in runs]})
    return runs


@pytest.mark.slow  # the full report (every fit, bootstrap and plot) of every shipped sweep
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_sweep_reports_each_variant_as_a_label(tmp_path, name):
    assert set(SHIPPED) == set(sweep_names())
    runs = write_fixture(tmp_path, name, np.random.default_rng(0))
    variants = {str(r.cfg.label) for r in runs}
    assert main(["report", "--results", str(tmp_path), "--out", str(tmp_path / "out"), "--replicates", "20",
                 "--workers", "1"]) == 0
    fits = json.loads((tmp_path / "out" / "fits.json").read_text())
    assert fits["sweeps"] == [name]
    labels = {lab for e in fits["experiments"] for lab in e["labels"]}
    assert labels == variants
    for exp in fits["experiments"]:
        for lab, res in exp["labels"].items():
            # every fit has a status, and a failed or weak one says why (fixed epochs: one budget per size, so
            # no isoFLOP or parametric fit)
            made = {"frontier", "wall_frontier"} | (set() if exp["protocol"] == "fixed_epochs" else
                                                    {"isoflop", "parametric"})
            assert set(res["status"]) >= made, lab
            for st in res["status"].values():
                assert st["status"] in ("ok", "weak", "failed")
                assert (st["status"] == "ok") == (not st["reasons"])
            # no parameter at a bound goes without a failed status
            for fit in ("frontier", "parametric"):
                if res[fit] and res[fit]["at_bound"]:
                    assert res["status"][fit]["status"] == "failed"
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.index("## Verdict") < report.index("### Fit status")
    if name == "lr_transfer":  # BTT's and Kronecker's two seeds measure the noise the drift gap is bootstrapped at
        (transfer,) = [e["lr_transfer"] for e in fits["experiments"]]
        assert {t["structure"] for t in transfer} == {"btt", "kron", "low_rank", "monarch"}
        assert all(t["verdict"] in ("reproduced", "not reproduced", "not resolved") for t in transfer)
        repeated = sum(1 for r in runs if r.cfg.train.seed == 1)  # configs trained twice: 4 variants x 4 x 8
        assert repeated == 128
        assert all(t["noise"].endswith(f"from repeated seeds ({repeated} configs)") for t in transfer)
    assert (tmp_path / "out" / "runs.parquet").is_file() and (tmp_path / "out" / "curves.parquet").is_file()


def test_two_budget_sweep_skips_the_holdout_with_a_note(tmp_path):
    SyntheticSweep([SyntheticStructure("dense", HOFFMANN)], budgets=(1e13, 4e13), diverged=0).write(tmp_path)
    report = analyse(load_sweeps(tmp_path), replicates=20, workers=1)
    dense = report.experiments[0].structures["dense"]
    holdout = dense.holdout
    assert dense.status["isoflop"].status == "weak"  # 2 budgets for 2 parameters
    assert "2 budgets with an interior optimum for 2 parameters" in dense.status["isoflop"].text()
    notes = set(holdout["note"])
    assert "skipped: holding out 1 budget needs 3 budgets, the runs have 2" in notes
    assert "skipped: holding out 2 budgets needs 4 budgets, the runs have 2" in notes
    given = analyse(load_sweeps(tmp_path), replicates=20, workers=1, loss_noise=0.005)
    fits = given.experiments[0].structures["dense"]
    assert fits.isoflop.noise.source == fits.frontier.noise.source == "given: loss std 0.005"


@pytest.mark.slow  # the full report (fits, bootstraps, plots) of two planned shipped sweeps
def test_sweep_filter_and_two_sweeps_side_by_side(tmp_path, capsys):
    write_fixture(tmp_path, "quickstart", np.random.default_rng(2))
    write_fixture(tmp_path, "btt_gpt2", np.random.default_rng(3))
    one = load_sweeps(tmp_path, ["btt_gpt2"])
    assert list(one) == ["btt_gpt2"] and set(one["btt_gpt2"].runs["label"]) == {"dense", "btt_r1", "btt_r4"}
    both = load_sweeps(tmp_path)
    assert set(both) == {"btt_gpt2", "quickstart"}
    assert set(both["quickstart"].runs["label"]) == {"dense", "btt"}
    assert main(["report", "--results", str(tmp_path), "--sweep", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "--sweep nope: no such sweep" in capsys.readouterr().err
    assert main(["report", "--results", str(tmp_path), "--sweep", "quickstart", "--sweep", "btt_gpt2", "--out",
                 str(tmp_path / "out"), "--replicates", "20", "--workers", "1"]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Sweeps side by side" in report and "| quickstart: alpha |" in report.replace("label | ", "")
    assert "## `btt_gpt2: gpt2/shakespeare`" in report and "## `quickstart: gpt2/shakespeare`" in report


@pytest.mark.slow
def test_tiny_real_sweep_with_two_btt_variants(tmp_path):
    """Real training: btt rank 1 and rank 4 at 2 FLOP budgets; the report has both labels as separate frontiers."""
    from scaling.launch.submit import launch

    sweep = {"name": "tiny_btt",
             "base": ["model=gpt2", "model.base_width=32", "model.depth=1", "model.head_dim=16", "model.context=32",
                      "train.batch_size=8", "train.lr=0.01", "train.eval_points=3", "train.schedule=constant",
                      "logger.mode=disabled"],
             "axes": {"model.width": [32, 48, 64]},
             "variants": {"btt_r1": {"overrides": ["structure=btt", "structure.rank=1"]},
                          "btt_r4": {"overrides": ["structure=btt", "structure.rank=4"]}},
             "budgets": {"flops": [4e9, 1.6e10]}}
    cfg = compose_launch_config(["+sweep=quickstart", f"results_root={tmp_path}", "cluster=debug"])
    cfg.sweep = OmegaConf.create(sweep)
    launch(cfg)
    tables = load_sweeps(tmp_path)
    runs = tables["tiny_btt"].runs
    assert len(runs) == 12 and set(runs["label"]) == {"btt_r1", "btt_r4"}
    # a run of the larger budget also evaluated where it passed the smaller one
    big = runs.loc[runs["flops"].idxmax(), "run_id"]
    ev = tables["tiny_btt"].evals
    small_budget = runs.loc[(runs["label"] == runs.loc[runs["run_id"] == big, "label"].iloc[0]), "flops"].min()
    assert np.isclose(ev.loc[ev["run_id"] == big, "flops"], small_budget, rtol=0.1).any()
    out = tmp_path / "out"
    assert main(["report", "--results", str(tmp_path), "--out", str(out), "--replicates", "20",
                 "--workers", "1"]) == 0
    fits = json.loads((out / "fits.json").read_text())
    labels = fits["experiments"][0]["labels"]
    assert set(labels) == {"btt_r1", "btt_r4"}
    assert labels["btt_r1"]["frontier"] is not None and labels["btt_r4"]["frontier"] is not None
    assert labels["btt_r1"]["frontier"]["params"] != labels["btt_r4"]["frontier"]["params"]
    assert "**btt_r1**" in (out / "report.md").read_text() and "**btt_r4**" in (out / "report.md").read_text()
