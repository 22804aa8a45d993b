"""The fixed-epoch protocol (CBS's MLP comparison) and the training-loss metric: each run at its label's sweep LR is
one point of its label's loss-vs-FLOPs curve, the pooled fit recovers a known horizontal shift with an interval
that holds it, and the report reads the final training loss when asked."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import table_from_records
from analysis.cli import main
from analysis.errors import AnalysisError
from analysis.fit.inputs import fixed_epoch_points, is_fixed_epochs, main_lr_runs
from analysis.fit.pooled import fit_pooled
from analysis.io.exports import read_exports, write_exports
from analysis.io.load import final_train_loss
from analysis.io.metric import NO_TRAIN_LOSS, with_metric
from analysis.io.synthetic import HOFFMANN, FixedEpochSweep, SyntheticStructure, SyntheticSweep
from analysis.report.build import analyse
from analysis.report.write import write_report


def _points(sweep: FixedEpochSweep) -> pd.DataFrame:
    return fixed_epoch_points(with_metric(table_from_records(sweep.records()), "train_loss").runs)


def test_the_pooled_shift_between_curves_is_recovered_within_its_interval():
    sweep = FixedEpochSweep({"dense": 1.0, "btt": 4.0, "slow": 0.5}, seed=1)
    fit = fit_pooled(_points(sweep), "dense", replicates=300, seed=1, isoflop=False)
    assert fit.protocol == "fixed_epochs" and fit.model == "shared" and fit.p_value > 0.05
    assert fit.correlation == 0.0 and sum(fit.failed_replicates.values()) == 0
    for label, k in sweep.multipliers.items():
        m = fit.labels[label].multiplier
        assert m.contains(k) and m.value == pytest.approx(k, rel=0.1), (label, m)
    assert fit.alpha.contains(sweep.alpha)
    E, A, alpha = fit.curves["shared"]["btt"]  # the curve in absolute FLOPs: A_btt = A k^-alpha
    c = 1e12
    assert E + A * c ** -alpha == pytest.approx(sweep.loss("btt", c), rel=0.03)
    k = fit.labels["btt"].multiplier.value
    assert fit.curves["shared"]["dense"][1] == pytest.approx(A * k ** alpha, rel=1e-9)


def test_one_compute_value_is_refused_with_the_fix():
    sweep = FixedEpochSweep({"dense": 1.0, "btt": 2.0}, n_effs=(1e4,), seeds=4)
    with pytest.raises(AnalysisError, match="2 or more compute values"):
        fit_pooled(_points(sweep), "dense", replicates=10, isoflop=False)


def test_lr_check_runs_are_not_points_of_the_curve():
    sweep = FixedEpochSweep({"dense": 1.0, "btt": 4.0}, lr_check=(1e-3, 1e-2))
    runs = table_from_records(sweep.records()).runs
    assert len(runs) == 2 * (7 * 2 + 2)
    main = main_lr_runs(runs)
    assert len(main) == 2 * 7 * 2 and set(main["lr"]) == {3e-3}
    assert is_fixed_epochs(runs)
    constant = table_from_records(SyntheticSweep([SyntheticStructure("dense", HOFFMANN)], diverged=0).records())
    assert not is_fixed_epochs(constant.runs)  # many budgets, constant LR: the isoFLOP protocol
    unrecorded = runs.assign(tokens_target=np.nan, tokens=runs["width"] * 1e6)  # runs trained to FLOP budgets
    assert not is_fixed_epochs(unrecorded)  # a missing target is not one shared budget


def test_final_train_loss_is_the_mean_over_the_last_5_percent():
    rows = [{"kind": "train", "step": k, "tokens": 10.0 * k, "loss": float(k)} for k in range(1, 101)]
    rows.append({"kind": "eval", "step": 100, "tokens": 1000.0, "val_loss": 0.1})
    assert final_train_loss(rows) == pytest.approx(np.mean([96, 97, 98, 99, 100]))
    assert final_train_loss([{"kind": "eval", "tokens": 1.0, "val_loss": 0.1}]) is None


def test_the_train_loss_metric_swaps_what_the_fits_read_and_excludes_runs_without_it():
    sweep = FixedEpochSweep({"dense": 1.0, "btt": 4.0}, seeds=1)
    table = table_from_records(sweep.records())
    np.testing.assert_allclose(table.runs["final_val_loss"] - table.runs["final_train_loss"], sweep.val_gap)
    table.runs.loc[0, "final_train_loss"] = np.nan
    swapped = with_metric(table, "train_loss")
    assert len(swapped.runs) == len(table.runs) - 1 and list(swapped.excluded["reason"]) == [NO_TRAIN_LOSS]
    np.testing.assert_allclose(swapped.runs["final_val_loss"], swapped.runs["final_train_loss"])
    assert len(swapped.evals) == len(swapped.runs)  # the curve is the final point
    assert with_metric(table, "val_loss") is table
    with pytest.raises(AnalysisError, match="metric='test_loss'"):
        with_metric(table, "test_loss")


def test_report_reads_the_training_loss_and_refits_from_its_exports(tmp_path):
    sweep = FixedEpochSweep({"dense": 1.0, "btt": 4.0}, seed=1, lr_check=(1e-3, 1e-2))
    report = analyse({"fixed": table_from_records(sweep.records())}, "synthetic", replicates=100, workers=1,
                     metric="train_loss")
    exp = report.experiments[0]
    assert exp.protocol == "fixed_epochs" and exp.pooled.protocol == "fixed_epochs"
    assert exp.pooled.multiplier("btt").contains(4.0)
    assert exp.structures["btt"].isoflop is None and "isoflop" not in exp.structures["btt"].status
    assert len(exp.lr_sweeps) == 2  # the LR check: 3 lrs at one width per label
    out = tmp_path / "report"
    write_report(report, out, workers=1)
    text = (out / "report.md").read_text()
    assert "Fixed-epoch protocol" in text and "Loss: final training loss" in text
    assert "| btt | structure_aware | 800: " in text  # the LR check at one width per label
    assert (out / "plots" / "fixed_mlp_fashion_mnist_fixed_epochs.png").is_file()
    fits = json.loads((out / "fits.json").read_text())
    assert fits["metric"] == "train_loss" and fits["experiments"][0]["pooled"]["protocol"] == "fixed_epochs"
    exported = read_exports(out)["fixed"]
    assert exported.runs["final_train_loss"].notna().all()  # both losses are kept beside the report
    assert (exported.runs["final_val_loss"] > exported.runs["final_train_loss"]).all()
    again = analyse(exported, "exports", replicates=100, workers=1, metric="train_loss")
    assert again.experiments[0].pooled.labels["btt"].multiplier.value == pytest.approx(
        exp.pooled.labels["btt"].multiplier.value, rel=1e-9)
    by_val = analyse(exported, "exports", replicates=100, workers=1, protocol="fixed_epochs")
    assert by_val.experiments[0].pooled.multiplier("btt").value != pytest.approx(
        exp.pooled.multiplier("btt").value, rel=1e-6)  # the validation loss is another metric


def test_cli_flags(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    sweep = FixedEpochSweep({"dense": 1.0, "btt": 4.0}, seed=1)
    write_exports({"fixed": table_from_records(sweep.records())}, tmp_path / "a")
    assert main(["report", "--exports", str(tmp_path / "a"), "--out", str(tmp_path / "b"), "--metric", "train_loss",
                 "--protocol", "fixed_epochs", "--replicates", "50", "--workers", "1"]) == 0
    assert json.loads((tmp_path / "b" / "fits.json").read_text())["metric"] == "train_loss"
    assert main(["report", "--exports", str(tmp_path / "a"), "--out", str(tmp_path / "c"), "--metric", "loss"]) == 2
    assert "--metric" in capsys.readouterr().err
