"""Pooled compute multipliers: one joint fit of every label recovers known multipliers with intervals, the test
picks per-label exponents only when they differ, the report's headline cites it, and its 95% intervals hold the
truth in the regime this project runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from analysis import table_from_records
from analysis.errors import AnalysisError
from analysis.fit.bootstrap import Interval
from analysis.fit.coverage import MULTIPLIERS, Cell, draw_reads, label_law, run_cells, summary
from analysis.fit.diagnostics import NOT_CONVERGED, multiplier_status
from analysis.fit.inputs import pooled_reads
from analysis.fit.pooled import fit_pooled, noise_moments
from analysis.io.exports import read_exports
from analysis.io.synthetic import HOFFMANN, Law, SyntheticStructure, SyntheticSweep
from analysis.report.build import analyse
from analysis.report.markdown import headline, markdown

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_shared_exponent_recovers_the_multipliers():
    fit = fit_pooled(draw_reads(Cell(1.5, 3), np.random.default_rng(0)), replicates=200, seed=0)
    assert fit.reference == "dense" and fit.model == "shared" and fit.p_value > 0.05
    assert sum(fit.failed_replicates.values()) == 0
    for label, k in MULTIPLIERS.items():
        m = fit.labels[label].multiplier
        assert m.contains(k) and m.value == pytest.approx(k, rel=0.1), (label, m)
        assert m.hi / m.lo < 1.3 or label == "dense"
        assert fit.labels[label].alpha_per_label.contains(HOFFMANN.frontier_exponent)
    assert fit.alpha.contains(HOFFMANN.frontier_exponent)
    assert fit.labels["dense"].multiplier == Interval(1.0, 1.0, 1.0)


def test_the_loss_gap_at_the_reference_budget_is_recovered():
    """log L*_l(C_ref) - log L*_dense(C_ref): the truth is the frontier read at k C_ref against C_ref."""
    fit = fit_pooled(draw_reads(Cell(1.5, 3), np.random.default_rng(0)), replicates=200, seed=0)
    for label, k in MULTIPLIERS.items():
        truth = math.log(HOFFMANN.frontier(k * fit.reference_flops) / HOFFMANN.frontier(fit.reference_flops))
        gap = fit.loss_gap(label)
        assert gap.contains(truth) and gap.value == pytest.approx(truth, abs=0.005), (label, gap, truth)
    assert fit.labels["dense"].loss_gap == Interval(0.0, 0.0, 0.0)


def test_the_loss_gap_is_tight_over_a_search_rounds_span():
    """Over a factor 4 of compute and one seed (a search's first round), with a label far below dense, the gap is
    read where the data are: within 0.03 of the truth, its interval under 0.1 wide. (Its multiplier, 6.7-10.8 with
    intervals up to 2.8x wide on such draws, extrapolates along dense's frontier.)"""
    laws = {"dense": HOFFMANN, "better": label_law(8.0)}
    for seed in (3, 4, 5):
        fit = fit_pooled(draw_reads(Cell(0.6, 1, sizes=4), np.random.default_rng(seed), laws), replicates=200,
                         seed=seed)
        truth = math.log(HOFFMANN.frontier(8.0 * fit.reference_flops) / HOFFMANN.frontier(fit.reference_flops))
        gap = fit.loss_gap("better")
        assert gap.hi < 0 and gap.hi - gap.lo < 0.1 and abs(gap.value - truth) < 0.03, (seed, gap, truth)


def test_different_exponents_are_detected_and_cited():
    steep = Law(HOFFMANN.E, HOFFMANN.A, HOFFMANN.B, 0.6, 0.45)  # frontier exponent 0.257 against dense's 0.154
    reads = draw_reads(Cell(1.5, 1), np.random.default_rng(1), {"dense": HOFFMANN, "steep": steep})
    fit = fit_pooled(reads, replicates=200, seed=1)
    assert fit.p_value < 0.05 and fit.model == "per-label"
    assert fit.multiplier("steep") is fit.labels["steep"].multiplier_per_label
    alphas = {k: v.alpha_per_label for k, v in fit.labels.items()}
    assert alphas["steep"].lo > alphas["dense"].hi


def test_noise_moments_are_unbiased_after_the_fit():
    """Reads of one run share an offset (correlation 0.6); least squares absorbs part of the noise, the moments
    allow for it: over many draws the estimates average to the truth."""
    rng = np.random.default_rng(0)
    run = np.repeat(np.arange(40), rng.integers(1, 5, 40))
    J = rng.normal(size=(run.size, 12))
    M = np.eye(run.size) - J @ np.linalg.pinv(J)
    est = []
    for _ in range(300):
        noise = 0.017 * (np.sqrt(0.6) * rng.normal(size=40)[run] + np.sqrt(0.4) * rng.normal(size=run.size))
        est.append(noise_moments(J, M @ noise, run))
    var, rho = np.mean(est, axis=0)
    assert var == pytest.approx(0.017 ** 2, rel=0.03) and rho == pytest.approx(0.6, abs=0.05)


def test_one_budget_or_one_label_is_refused():
    reads = draw_reads(Cell(0.3, 1), np.random.default_rng(2))
    with pytest.raises(AnalysisError, match="needs reads at 2 or more budgets"):
        fit_pooled(reads[reads["flops"] == reads["flops"].min()], replicates=20)
    with pytest.raises(AnalysisError, match="needs at least 2"):
        fit_pooled(reads[reads["label"] == "dense"], replicates=20)


def test_pooled_multipliers_are_judged_by_the_one_multiplier_rule():
    ok = Interval(1.5, 1.2, 1.9)
    assert multiplier_status(ok, {}).ok
    wide = multiplier_status(Interval(1.5, 0.9, 2.6), {})
    assert wide.status == "weak"
    assert wide.reasons == ("multiplier interval [0.9, 2.6] spans 2.89x (more than 2.5x)",)
    outside = multiplier_status(Interval(1.5, 1.6, 1.9), {})
    assert outside.status == "weak" and outside.reasons[0].startswith("multiplier = 1.5 lies outside its interval")
    assert multiplier_status(Interval(1.5, float("nan"), float("nan")), {}).status == "failed"


def test_report_cites_the_pooled_multiplier_first(tmp_path):
    structures = [SyntheticStructure("dense", HOFFMANN), SyntheticStructure("btt", label_law(2.0)),
                  SyntheticStructure("kron", label_law(0.6))]
    sweep = SyntheticSweep(structures, budgets=(1e13, 2e13, 4e13), sizes_per_budget=5, diverged=0, seed=3)
    report = analyse(table_from_records(sweep.records()), replicates=50, workers=1)
    exp = report.experiments[0]
    pooled = exp.pooled
    assert pooled.model == "shared" and pooled.reference_flops == exp.reference_flops == 4e13
    assert pooled.labels["btt"].multiplier.contains(2.0) and pooled.labels["kron"].multiplier.contains(0.6)
    assert exp.structures["btt"].status["pooled"].ok and "pooled" not in exp.structures["dense"].status
    assert headline(exp).startswith("At C = 4e+13 FLOPs (pooled fit, a shared exponent: the test of per-label "
                                    "exponents gives p = ")
    assert f"btt beats dense per FLOP: it reaches dense's loss with {pooled.labels['btt'].multiplier.value:.3g}x" \
        in headline(exp)
    text = markdown(report, {}, tmp_path)
    section = text[text.index("## `gpt2/shakespeare`"):]
    assert section.index("### Compute multipliers (pooled fit)") < section.index("### Fit status") \
        < section.index("### Loss frontier")
    assert "| btt | 18 | " in section and " | ok | " in section


@pytest.mark.slow
def test_intervals_cover_the_truth_in_the_regime_we_run():
    """100 simulated sweeps over 0.3 decades of budgets with one seed (this project's regime): the multipliers' and
    the shared exponent's 95% intervals hold the truth at least 88% of the time (a true 95% gives >= 88 with
    probability ~0.99)."""
    row = summary(run_cells([Cell(0.3, 1)], sweeps=100, seed=0)).iloc[0]
    for col in ("k_fast", "k_slow", "alpha"):
        assert row[col] >= 0.88, (col, row[col])


def test_the_committed_quickstart_fit_converges_in_almost_every_replicate():
    """Over the quickstart's 0.3 decades E, A and alpha are nearly interchangeable; parametrised by the frontier's
    level and slope at the centre the solver still converges (it failed 444 of 1000 shared replicates in (E, A,
    alpha)), and the multiplier is the committed report's."""
    table = read_exports(REPO_ROOT / "docs/results/quickstart")["quickstart"]
    fit = fit_pooled(pooled_reads(table, table.runs), replicates=300, seed=0)
    assert max(fit.failed_replicates.values()) <= 3, fit.failed_replicates
    assert fit.labels["btt"].multiplier.value == pytest.approx(0.856, abs=0.001)
    assert multiplier_status(fit.multiplier("btt"), {}, NOT_CONVERGED).ok


def test_unconverged_replicates_beyond_the_tail_fail_the_pooled_multiplier():
    iv = Interval(0.9, 0.7, 1.1, dropped=0.05)
    st = multiplier_status(iv, {}, NOT_CONVERGED)
    assert st.status == "failed" and "5.0% of bootstrap replicates did not converge" in st.reasons[0]
