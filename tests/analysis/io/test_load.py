"""Loading run directories: tidy tables, N_eff, einsum taxonomy, and excluded runs with their reasons."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import AnalysisError, coordinates, load_coordchecks, load_results, table_from_records
from analysis.io.load import load_sweeps
from analysis.io.synthetic import HOFFMANN, SyntheticStructure, SyntheticSweep
from scaling.store.results import atomic_write_json, run_dir


def small_sweep(**kw) -> SyntheticSweep:
    structures = [SyntheticStructure("dense", HOFFMANN),
                  SyntheticStructure("einsum", HOFFMANN, params_ratio=0.5, theta=(0.5, 0.5, 0, 0.5, 0.5, 0, 0))]
    return SyntheticSweep(structures, budgets=(1e13, 4e13), sizes_per_budget=3, **kw)


def test_directories_and_records_give_the_same_tables(tmp_path):
    sweep = small_sweep()
    sweep.write(tmp_path)
    from_dirs = load_results(tmp_path)
    from_records = table_from_records(sweep.records())
    key = ["run_id"]
    pd.testing.assert_frame_equal(from_dirs.runs.sort_values(key).reset_index(drop=True),
                                  from_records.runs.sort_values(key).reset_index(drop=True), check_dtype=False)
    assert len(from_dirs.evals) == len(from_records.evals) == 8 * len(from_dirs.runs)


def test_columns_neff_labels_and_taxonomy():
    table = table_from_records(small_sweep().records())
    runs = table.runs
    np.testing.assert_allclose(runs["n_eff"], runs["train_flops_per_token"] / 6)
    dense, ein = runs[runs["structure"] == "dense"], runs[runs["structure"] == "einsum"]
    np.testing.assert_allclose(ein["params"], ein["n_eff"] * 0.5)  # raw count kept next to N_eff
    assert set(dense["label"]) == {"dense"} and dense["omega"].isna().all()
    assert set(ein["label"]) == {"einsum"}  # summary.json's label
    assert set(ein["omega"]) == {0.5} and set(ein["psi"]) == {1.0} and set(ein["nu"]) == {0.5}
    assert set(runs["experiment"]) == {"gpt2/shakespeare"}
    # every eval point carries flops = tokens x train FLOPs per token of its run
    merged = table.evals.merge(runs[["run_id", "train_flops_per_token"]], on="run_id")
    np.testing.assert_allclose(merged["flops"], merged["tokens"] * merged["train_flops_per_token"])


@pytest.mark.parametrize("theta, expected", [
    ((1, 0, 0, 0, 1, 0, 0.25), (0, 0.25, 0.25)),  # low rank d^rho
    ((0.5, 0, 0.5, 0, 0.5, 0.5, 0), (0, 1, 0.5)),  # Monarch / BTT-1
    ((0.5, 0, 0.5, 0, 0.5, 0.5, 0.25), (0, 1, 0.75)),  # BTT rank d^(1/4)
    ((0.5, 0.5, 0, 0.5, 0.5, 0, 0), (0.5, 1, 0.5)),  # Kronecker
    ((1, 0, 0, 0, 1, 0, 1), (0, 1, 1)),  # dense
])
def test_taxonomy_table_of_the_einsum_paper(theta, expected):
    c = coordinates(theta)
    assert (c.omega, c.psi, c.nu) == pytest.approx(expected)


def test_label_precedence_manifest_then_summary_then_config_then_default(tmp_path):
    rec = next(r for r in small_sweep(diverged=0).records() if r.summary["structure"] == "einsum")
    rec.summary["label"], rec.config["label"] = "from_summary", "from_config"
    assert table_from_records([rec]).runs["label"].iloc[0] == "from_summary"
    rec.summary.pop("label")
    assert table_from_records([rec]).runs["label"].iloc[0] == "from_config"
    rec.config.pop("label")
    assert table_from_records([rec]).runs["label"].iloc[0] == "einsum_0.5_0.5_0_0.5_0.5_0_0"  # default_label
    rec.label = "kron"  # what a sweep manifest says wins
    assert table_from_records([rec]).runs["label"].iloc[0] == "kron"


def test_a_run_two_sweeps_share_is_in_both_under_each_label(tmp_path):
    sweep = small_sweep(diverged=0)
    ids = sweep.write(tmp_path)
    atomic_write_json(tmp_path / "sweeps" / "a.json", {"name": "a", "runs": [
        {"run_id": ids[0], "label": "first_a model.width=64 flops=1e+13"},
        {"run_id": "f" * 16, "label": "pending_one"}]})
    atomic_write_json(tmp_path / "sweeps" / "b.json", {"name": "b", "runs": [
        {"run_id": ids[0], "label": "default model.width=64", "variant": "first_b"}]})
    tables = load_sweeps(tmp_path)
    assert list(tables) == ["a", "b", "synthetic"]
    assert list(tables["a"].runs["label"]) == ["first_a"] and list(tables["b"].runs["label"]) == ["first_b"]
    assert dict(zip(tables["a"].excluded["run_id"], tables["a"].excluded["reason"])) == {
        "f" * 16: "not started (no run directory)"}
    assert len(tables["synthetic"].runs) == len(ids)  # summary.json's sweep, labels from the summaries


def test_recorded_coordinates_take_precedence():
    records = small_sweep(diverged=0).records()
    rec = next(r for r in records if r.summary["structure"] == "einsum")
    rec.summary.update(omega=0.25, psi=0.75, nu=0.6)
    row = table_from_records([rec]).runs.iloc[0]
    assert (row["omega"], row["psi"], row["nu"]) == (0.25, 0.75, 0.6)


def test_unusable_runs_are_excluded_with_reasons(tmp_path, caplog):
    sweep = small_sweep(diverged=1)
    ids = sweep.write(tmp_path)
    running = run_dir(tmp_path, "0" * 16)
    atomic_write_json(running / "summary.json", {"run_id": "0" * 16, "status": "running"})
    broken = run_dir(tmp_path, "1" * 16)
    broken.mkdir(parents=True)
    (broken / "summary.json").write_text("{not json")
    nan_loss = run_dir(tmp_path, ids[0])
    summary = json.loads((nan_loss / "summary.json").read_text())
    atomic_write_json(nan_loss / "summary.json", {**summary, "final_val_loss": float("nan")})

    table = load_results(tmp_path)
    reasons = dict(zip(table.excluded["run_id"], table.excluded["reason"]))
    assert reasons["0" * 16] == "status running"
    assert reasons["1" * 16] == "unusable summary.json"
    assert reasons[ids[0]] == "unusable summary.json"  # final_val_loss NaN: named in one warning line
    assert [r.message for r in caplog.records if ids[0] in r.message] == [
        f"warning: run {ids[0]} left out: {nan_loss / 'summary.json'}: final_val_loss holds NaN, not a positive "
        "number; delete summary.json to let the next launch resume the run from its checkpoint (or retrain it)"]
    assert sum(r == "status diverged" for r in reasons.values()) == 2
    assert len(table.runs) + len(table.excluded) == len(ids) + 2
    note = table.exclusion_note()
    assert note.startswith(f"excluded 5 of {len(ids) + 2} runs") and "2 status diverged" in note


def test_all_diverged_and_missing_root_give_clear_errors(tmp_path):
    SyntheticSweep([SyntheticStructure("dense", HOFFMANN)], budgets=(), diverged=3).write(tmp_path / "r")
    with pytest.raises(AnalysisError, match="no usable runs; excluded 3 of 3 runs: 3 status diverged"):
        load_results(tmp_path / "r")
    with pytest.raises(AnalysisError, match="no runs/ directory"):
        load_results(tmp_path / "nowhere")


def test_coordcheck_tables(tmp_path):
    rows = [{"width": w, "seed": 0, "layer": "ffn_up", "role": "ffn_up", "structure": "btt", "step": s,
             "delta_rms": 0.1 * s, "h_rms": 1.0} for w in (64, 128) for s in (0, 3)]
    (tmp_path / "btt_naive").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "btt_naive" / "coord.csv", index=False)
    checks = load_coordchecks([tmp_path / "btt_naive"])
    assert list(checks) == ["btt_naive"] and len(checks["btt_naive"]) == 4
    with pytest.raises(AnalysisError, match="no coord.csv there"):
        load_coordchecks([tmp_path])
