"""`python -m analysis`: CSV fits, the full report, and degenerate input as a message with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.errors import AnalysisError
from analysis.fit.tables import isoflop_from_table, read_table
from analysis.plan_next import check_out
from analysis.io.synthetic import HOFFMANN, Law, SyntheticStructure, SyntheticSweep

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def chinchilla_csv(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for c in np.geomspace(6e18, 3e21, 7):
        for f in np.geomspace(1 / 6, 6, 7):
            n = float(HOFFMANN.n_opt(c) * f)
            rows.append({"params": n, "flops": c, "loss": float(HOFFMANN.loss(n, c / (6 * n)) * np.exp(
                rng.normal(0, 0.005)))})
    path = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_fit_parametric_json_from_flops(chinchilla_csv, capsys):
    code = main(["fit-parametric", "--csv", str(chinchilla_csv), "--params-col", "params", "--flops-col", "flops",
                 "--loss-col", "loss", "--json", "--replicates", "100", "--at-flops", "1e22"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"]["alpha"]["value"] == pytest.approx(0.34, abs=0.05)
    assert out["params"]["a"]["lo"] < 0.4516 < out["params"]["a"]["hi"]
    n_opt = out["allocation"]["1e+22"]["n_opt"]
    assert n_opt["lo"] < HOFFMANN.n_opt(1e22) < n_opt["hi"]


def test_fit_parametric_text_and_isoflop_and_frontier(chinchilla_csv, capsys):
    assert main(["fit-parametric", "--csv", str(chinchilla_csv), "--params-col", "params", "--flops-col", "flops",
                 "--loss-col", "loss", "--replicates", "50"]) == 0
    text = capsys.readouterr().out
    assert "a = beta/(alpha+beta)" in text and "N_opt" in text and "at C = 3e+21" in text
    assert main(["isoflop", "--csv", str(chinchilla_csv), "--params-col", "params", "--flops-col", "flops",
                 "--loss-col", "loss", "--replicates", "50"]) == 0
    text = capsys.readouterr().out
    assert "N* ~ C^a over" in text and "residuals of per-budget quadratic fits" in text
    assert main(["fit-frontier", "--csv", str(chinchilla_csv), "--flops-col", "flops", "--loss-col", "loss",
                 "--replicates", "50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"]["alpha"]["value"] > 0


def test_bad_input_exits_2_with_a_message(chinchilla_csv, tmp_path, capsys):
    assert main(["fit-parametric", "--csv", str(chinchilla_csv), "--params-col", "N", "--flops-col", "flops",
                 "--loss-col", "loss"]) == 2
    assert "--params-col 'N': no such column; the table has ['params', 'flops', 'loss']" in capsys.readouterr().err
    one_budget = tmp_path / "one.csv"
    pd.read_csv(chinchilla_csv).head(7).to_csv(one_budget, index=False)
    assert main(["isoflop", "--csv", str(one_budget), "--params-col", "params", "--flops-col", "flops",
                 "--loss-col", "loss"]) == 2
    assert "fall in one FLOP budget" in capsys.readouterr().err
    assert main(["fit-parametric", "--csv", str(tmp_path / "missing.csv"), "--params-col", "params",
                 "--tokens-col", "t", "--loss-col", "loss"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_library_error_names_the_argument_and_the_cli_names_the_flag(chinchilla_csv, tmp_path, capsys):
    df = read_table(chinchilla_csv)
    with pytest.raises(AnalysisError) as err:
        isoflop_from_table(df, "params", "loss", flops_col="flops", lr_col="lr")
    assert str(err.value).startswith("lr_col='lr': no such column") and "--" not in str(err.value)
    assert main(["isoflop", "--csv", str(chinchilla_csv), "--params-col", "params", "--flops-col", "flops",
                 "--loss-col", "loss", "--lr-col", "lr"]) == 2
    assert capsys.readouterr().err.startswith("error: --lr-col 'lr': no such column")

    taken = tmp_path / "taken.yaml"
    taken.write_text("kept\n")
    with pytest.raises(AnalysisError, match=r"^out=\S+ exists; pass force=True to overwrite it, or choose another "
                                            "`out`$"):
        check_out(taken, force=False, first="first")
    assert main(["plan-next", "--sweep", "first", "--budgets", "1e15", "--out", str(taken)]) == 2
    assert capsys.readouterr().err == (f"error: --out {taken} exists; pass --force to overwrite it, or choose "
                                       "another --out\n")


def test_all_diverged_report_is_a_message_not_a_traceback(tmp_path):
    SyntheticSweep([SyntheticStructure("dense", HOFFMANN)], budgets=(), diverged=4).write(tmp_path / "results")
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", "--results", str(tmp_path / "results"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "4 status diverged" in proc.stderr


@pytest.mark.slow
def test_report_end_to_end(tmp_path, capsys):
    structures = [SyntheticStructure("dense", HOFFMANN), SyntheticStructure("btt", Law(1.69, 330, 410.7, 0.37, 0.28)),
                  SyntheticStructure("einsum", Law(1.75, 420, 410.7, 0.3, 0.28), params_ratio=0.5,
                                     theta=(0.5, 0.5, 0, 0.5, 0.5, 0, 0), lr_drift=0.5)]
    SyntheticSweep(structures, lr_widths=(64, 128, 256)).write(tmp_path / "results")
    coord = tmp_path / "cc" / "btt_naive"
    coord.mkdir(parents=True)
    pd.DataFrame([{"width": w, "seed": 0, "layer": layer, "role": layer, "structure": "btt", "step": 3,
                   "delta_rms": 0.1 * (w / 64) ** slope, "h_rms": 1.0} for w in (64, 128, 256)
                  for layer, slope in (("ffn_up", -0.5), ("attn_q", 0.0))]).to_csv(coord / "coord.csv", index=False)
    code = main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out"),
                 "--replicates", "100", "--coordcheck", str(coord), "--workers", "2"])
    assert code == 0
    assert "excluded 6 of" in capsys.readouterr().out  # 2 diverged runs per structure, noted
    report = (tmp_path / "out" / "report.md").read_text()
    for heading in ("## Verdict", "### Fit status", "Loss frontier (approach 1)", "Wall-clock frontier",
                    "IsoFLOP optima (approach 2)", "Parametric fit (approach 3)", "Extrapolation check",
                    "Einsum taxonomy", "Learning-rate transfer", "Coordinate checks", "Excluded runs"):
        assert heading in report, heading
    fits = json.loads((tmp_path / "out" / "fits.json").read_text())
    (exp,) = [e for e in fits["experiments"] if e["experiment"] == "gpt2/shakespeare"]
    assert exp["sweep"] == "synthetic" and set(exp["labels"]) == {"dense", "btt", "einsum"}
    btt = exp["labels"]["btt"]
    # btt's law reaches dense's loss with less compute: multiplier above 1 with its interval
    assert btt["compute_multiplier"]["lo"] > 1
    assert btt["parametric"]["params"]["alpha"]["lo"] < 0.37 < btt["parametric"]["params"]["alpha"]["hi"]
    # same seconds per FLOP for every label: the wall-clock multiplier equals the FLOP one
    assert btt["wall_multiplier"]["value"] == pytest.approx(btt["compute_multiplier"]["value"], rel=0.05)
    plots = {p.name for p in (tmp_path / "out" / "plots").iterdir()}
    for stem in ("frontiers_frontier", "frontiers_wall_frontier", "loss_vs_frontier", "loss_vs_wall_frontier",
                 "isoflop", "nstar", "multiplier", "taxonomy", "lr_vs_width", "lr_sweeps"):
        stem = f"synthetic_gpt2_shakespeare_{stem}"
        assert {f"{stem}.png", f"{stem}.pdf"} <= plots, stem
        assert f"plots/{stem}.png" in report
    assert {"coordinate_checks.png", "coordinate_checks.pdf"} <= plots
    runs = pd.read_parquet(tmp_path / "out" / "runs.parquet")
    curves = pd.read_parquet(tmp_path / "out" / "curves.parquet")
    assert runs["run_id"].is_unique and len(runs) == len(pd.read_csv(tmp_path / "out" / "runs.csv"))
    assert set(curves["run_id"]) == set(runs["run_id"]) and len(curves) == 8 * len(runs)
    assert {"label", "flops", "val_loss", "wall_s"} <= set(curves.columns)


def test_precision_check_recomputes_the_committed_verdict_from_its_exports(tmp_path, capsys):
    """The committed bf16-vs-fp32 runs (docs/results/precision_check) re-analysed give the committed numbers."""
    committed = REPO / "docs" / "results" / "precision_check"
    assert main(["precision-check", "--exports", str(committed), "--out", str(tmp_path)]) == 0
    assert "bf16 keeps the final_val_loss of fp32" in capsys.readouterr().out
    assert json.loads((tmp_path / "precision.json").read_text()) == json.loads(
        (committed / "precision.json").read_text())
    assert main(["precision-check", "--results", str(tmp_path)]) == 2
    assert "--results needs --sweep" in capsys.readouterr().err
