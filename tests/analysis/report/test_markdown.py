"""The report's best-final-loss table compares seed means, not one seed's minimum against another label's mean;
the LR-transfer lines print the bootstrap verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.report.markdown import best_final_losses


def run(label: str, width: int, seed: int, loss: float, flops: float = 6.4e11) -> dict:
    return {"run_id": f"{label}-{width}-{seed}-{flops:g}", "label": label, "width": width, "depth": 2,
            "tokens_target": flops / 1e4, "lr": 3e-3, "parametrization": "structure_aware", "batch_size": 32,
            "seed": seed, "flops": flops, "final_val_loss": loss}


def test_best_final_loss_is_the_lowest_seed_mean_at_the_top_budget():
    runs = pd.DataFrame([
        run("dense", 16, 0, 2.00), run("dense", 16, 1, 2.10),  # mean 2.05, though seed 0 alone is 2.00
        run("dense", 24, 0, 2.03), run("dense", 24, 1, 2.05),  # mean 2.04: the best configuration
        run("btt", 24, 0, 2.02), run("btt", 32, 0, 2.06),  # one seed each
        run("dense", 8, 0, 1.50, flops=1.6e11),  # a smaller budget: not compared
    ])
    best = best_final_losses(runs).set_index("label")
    assert best.loc["dense", "loss"] == pytest.approx(2.04) and best.loc["dense", "width"] == 24
    assert best.loc["dense", "seeds"] == 2 and best.loc["btt", "seeds"] == 1
    assert best.loc["btt", "loss"] == pytest.approx(2.02) and best.loc["btt", "width"] == 24
    np.testing.assert_allclose(best["flops"], 6.4e11, rtol=1e-12)
    # seed noise from dense's repeats (ddof 1, pooled over 2 configs): sigma^2 = (var log(2.0, 2.1) + var
    # log(2.03, 2.05)) / 2 with var of two values = (difference)^2 / 2; the mean's sd is L sigma / sqrt(seeds)
    sigma = np.sqrt(((np.log(2.1 / 2.0)) ** 2 / 2 + (np.log(2.05 / 2.03)) ** 2 / 2) / 2)
    assert best.loc["dense", "sd"] == pytest.approx(2.04 * sigma / np.sqrt(2))
    assert best.loc["btt", "sd"] == pytest.approx(2.02 * sigma)


def test_transfer_lines_print_slopes_gap_interval_probability_and_verdict():
    from analysis.fit.lr_transfer import TRANSFER_COLS
    from analysis.report.build import ExperimentResult
    from analysis.report.markdown import transfer_lines

    rows = [["e", "btt", 0.03, 0.65, 0.62, 0.41, 0.8, 0.95, 0.97, "reproduced", "given: loss std 0.01", 0.01, 1000],
            ["e", "kron", 0.04, 0.5, 0.46, float("nan"), float("nan"), 0.95, float("nan"),
             "no noise level: not tested", None, float("nan"), 1000]]
    exp = ExperimentResult(None, "e", {}, None, pd.DataFrame(), pd.DataFrame(), [],
                           transfer=pd.DataFrame(rows, columns=list(TRANSFER_COLS)))
    assert transfer_lines(exp) == [
        "- **btt**: slope of log2 lr* vs log2 width +0.03 structure-aware, +0.65 naive; gap |naive| - "
        "|structure-aware| = 0.62 [0.41, 0.80] (95%, 1000 replicates, given: loss std 0.01), P(gap > 0.3) = 0.97: "
        "**reproduced** (structure-aware drifts less).",
        "- **kron**: slope of log2 lr* vs log2 width +0.04 structure-aware, +0.50 naive; gap |naive| - "
        "|structure-aware| = 0.46; no noise level: not tested (no repeated seeds; give --loss-noise)."]
