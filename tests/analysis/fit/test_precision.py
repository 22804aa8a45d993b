"""The bf16-vs-fp32 loss check behind train.precision=auto (analysis/fit/precision.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.errors import AnalysisError
from analysis.fit.precision import precision_check


def runs(losses: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"label": label, "precision": precision, "final_val_loss": loss}
                         for (label, precision), values in losses.items() for loss in values])


def test_means_difference_and_standard_error_by_hand():
    check = precision_check(runs({("dense", "fp32"): [2.0, 2.2, 2.1], ("dense", "bf16"): [2.1, 2.3, 2.2]}))
    (row,) = check.table.itertuples()
    assert (row.n_ref, row.n_cand) == (3, 3)
    assert row.mean_ref == pytest.approx(2.1) and row.mean_cand == pytest.approx(2.2)
    assert row.difference == pytest.approx(0.1)
    assert row.se == pytest.approx(math.sqrt(0.01 / 3 + 0.01 / 3))  # sample variance 0.01 in each precision
    assert row.keeps_loss and check.keeps_loss  # 0.1 <= 2 x 0.0816
    assert math.isnan(row.speed)  # no wall times given


def test_speed_is_the_median_tokens_per_second_ratio():
    table = runs({("dense", "fp32"): [2.0, 2.1, 2.2], ("dense", "bf16"): [2.0, 2.1, 2.2]})
    table["tokens"] = 1000.0
    table["wall_time_s"] = [10.0, 10.0, 30.0, 20.0, 20.0, 5.0]  # medians: 100 and 50 tokens/s
    assert precision_check(table).table["speed"].item() == pytest.approx(0.5)


def test_a_difference_beyond_two_standard_errors_fails_its_label_and_the_verdict():
    check = precision_check(runs({
        ("dense", "fp32"): [2.0, 2.01, 2.02], ("dense", "bf16"): [2.0, 2.02, 2.01],
        ("btt", "fp32"): [2.0, 2.01, 2.02], ("btt", "bf16"): [2.1, 2.11, 2.12],
    }))
    assert dict(zip(check.table["label"], check.table["keeps_loss"])) == {"btt": False, "dense": True}
    assert not check.keeps_loss
    assert "does not keep" in check.markdown() and "| btt | 3 / 3 |" in check.markdown()


def test_one_seed_per_precision_is_refused_by_name():
    with pytest.raises(AnalysisError, match="label dense has 1 fp32 and 2 bf16 runs.*at least 2 seeds"):
        precision_check(runs({("dense", "fp32"): [2.0], ("dense", "bf16"): [2.0, 2.1]}))


def test_runs_without_a_precision_column_are_named():
    with pytest.raises(AnalysisError, match=r"lacks \['precision'\]"):
        precision_check(pd.DataFrame({"label": ["a"], "final_val_loss": [1.0]}))
