"""A written report's runs.parquet and curves.parquet are enough to re-analyse it: `report --exports` gives the
fits `report --results` gave, without the results store."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.cli import main
from analysis.io.exports import merged_tables, read_exports, write_exports
from analysis.io.load import RunTable, load_sweeps
from analysis.io.synthetic import HOFFMANN, SyntheticStructure, SyntheticSweep

REPO = Path(__file__).resolve().parents[3]


def test_exports_read_back_as_the_tables_they_came_from(tmp_path):
    SyntheticSweep([SyntheticStructure("dense", HOFFMANN), SyntheticStructure("btt", HOFFMANN)],
                   diverged=1).write(tmp_path / "results")
    tables = load_sweeps(tmp_path / "results")
    write_exports(tables, tmp_path)
    back = read_exports(tmp_path)
    assert back.keys() == tables.keys()
    for sweep, table in tables.items():
        pd.testing.assert_frame_equal(back[sweep].runs, table.runs, check_dtype=False)
        pd.testing.assert_frame_equal(back[sweep].evals.sort_values(["run_id", "step"]).reset_index(drop=True),
                                      table.evals.sort_values(["run_id", "step"]).reset_index(drop=True),
                                      check_dtype=False)
        assert list(back[sweep].excluded["run_id"]) == list(table.excluded["run_id"])


@pytest.mark.slow  # two full reports
def test_report_from_exports_gives_the_same_fits(tmp_path, capsys):
    SyntheticSweep([SyntheticStructure("dense", HOFFMANN), SyntheticStructure("btt", HOFFMANN)],
                   diverged=0).write(tmp_path / "results")
    common = ["--replicates", "20", "--workers", "1"]
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "a"), *common]) == 0
    assert main(["report", "--exports", str(tmp_path / "a"), "--out", str(tmp_path / "b"), *common]) == 0
    a, b = (json.loads((tmp_path / d / "fits.json").read_text()) for d in ("a", "b"))
    assert a["experiments"] == b["experiments"] and a["runs_used"] == b["runs_used"]
    assert main(["report", "--exports", str(tmp_path / "nothing"), "--out", str(tmp_path / "c")]) == 2
    assert f"--exports {tmp_path / 'nothing'}: no runs.parquet or curves.parquet there" in capsys.readouterr().err


def test_report_frame_is_every_headline_number_in_one_table():
    from analysis import read_exports, report_frame
    from analysis.report.build import analyse

    report = analyse(read_exports(REPO / "docs/results/quickstart"), replicates=50, workers=1)
    frame = report_frame(report)
    assert list(frame.columns) == ["sweep", "experiment", "label", "quantity", "value", "lo", "hi", "status"]
    pooled = frame[(frame["quantity"] == "pooled")].set_index("label")
    assert pooled.loc["dense", "status"] == "reference" and pooled.loc["btt", "value"] == pytest.approx(0.856, abs=1e-3)
    assert {"frontier.alpha", "isoflop.a", "parametric.beta", "multiplier"} <= set(frame["quantity"])
    assert set(frame["status"].dropna()) <= {"ok", "weak", "failed", "reference"}


def test_parametric_table_fit_reads_budgets_off_curves():
    from analysis import parametric_from_table

    runs = pd.read_parquet(REPO / "docs/results/quickstart/runs.parquet")
    curves = pd.read_parquet(REPO / "docs/results/quickstart/curves.parquet").merge(runs[["run_id", "n_eff"]])
    curves = curves[curves["flops"] > 0]
    once = parametric_from_table(runs, "n_eff", "final_val_loss", flops_col="flops", replicates=20)
    read = parametric_from_table(curves, "n_eff", "val_loss", flops_col="flops", run_col="run_id", replicates=20,
                                 budgets=[1.6e11, 2.4e11])  # the sweep's smaller budgets, read off the curves
    assert read.n_points > 2 * once.n_points  # every configuration read at each budget its curve passes


def test_several_sources_pool_into_one_table_with_each_run_once(tmp_path):
    """New runs of a sweep (a results store) pooled with a committed report's: the union, a shared run once."""
    SyntheticSweep([SyntheticStructure("dense", HOFFMANN), SyntheticStructure("btt", HOFFMANN)],
                   diverged=1).write(tmp_path / "results")
    whole = load_sweeps(tmp_path / "results")
    (sweep, table), = whole.items()
    ids = list(table.runs["run_id"])
    first, second = ({sweep: RunTable(table.runs[table.runs["run_id"].isin(part)].reset_index(drop=True),
                                      table.evals[table.evals["run_id"].isin(part)].reset_index(drop=True),
                                      table.excluded)} for part in (ids[: len(ids) // 2 + 3], ids[len(ids) // 2:]))
    write_exports(first, tmp_path)
    pooled = merged_tables(read_exports(tmp_path), second)[sweep]
    assert sorted(pooled.runs["run_id"]) == sorted(ids)
    assert len(pooled.evals) == len(table.evals)
    assert list(pooled.excluded["run_id"]) == list(table.excluded["run_id"])


@pytest.mark.parametrize("args, line", [
    ([], "give where the runs are: --results ROOT, --exports DIR or --wandb ENTITY/PROJECT"),
    (["--wandb", "me/proj", "--exports", "x"], "--wandb reads every run from wandb; give it without --results"),
    (["--exports", "x", "--sweep", "s"], "--sweep and --rounds read the sweep manifests of --results"),
])
def test_report_sources_that_do_not_combine_are_one_line(args, line, tmp_path, capsys):
    assert main(["report", *args, "--out", str(tmp_path / "out")]) == 2
    assert line in capsys.readouterr().err
