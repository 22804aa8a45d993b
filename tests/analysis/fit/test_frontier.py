"""Approach 1: the lower envelope of loss vs FLOPs and the L(C) = E + A C^-alpha fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import AnalysisError, fit_frontier, table_from_records
from analysis.fit.frontier import envelope_grid, lower_envelope
from analysis.fit.inputs import frontier_curves, seed_noise
from analysis.fit.noise import SeedNoise
from analysis.io.synthetic import HOFFMANN, SyntheticStructure, SyntheticSweep


def test_envelope_is_the_decreasing_minimum_over_runs():
    # Run a is better early, run b later; run c is never best. Curves are straight lines in log-log.
    curves = pd.DataFrame({
        "run_id": ["a", "a", "b", "b", "c", "c"],
        "flops": [1e10, 1e12, 1e11, 1e13, 1e10, 1e13],
        "loss": [4.0, 2.0, 3.0, 1.5, 5.0, 4.5],
    })
    grid = envelope_grid(curves, per_decade=2)
    c, loss, kept = lower_envelope(grid.log_loss, grid.log_flops)
    env_c, env_l = np.exp(c[kept]), np.exp(loss[kept])
    assert np.all(np.diff(env_l) < 0) and np.all(np.diff(env_c) > 0)
    # At C = 1e12 the envelope is run a's last point (2.0 beats b's interpolated 3 * (1.5/3)^(1/2) = 2.12).
    assert env_l[np.isclose(env_c, 1e12)] == pytest.approx([2.0])
    # At C = 1e13 only run b's final point (1.5) is on it; run c never is.
    assert env_l[-1] == pytest.approx(1.5)
    assert np.all(env_l <= 4.0)


def sweep_table(seed: int = 0, **kw):
    return table_from_records(SyntheticSweep([SyntheticStructure("dense", HOFFMANN)], seed=seed, diverged=0,
                                             **kw).records())


def test_recovers_the_frontier_exponent_of_a_known_law():
    table = sweep_table(seed=1, budgets=tuple(1e13 * 2.0 ** k for k in range(10)))
    fit = fit_frontier(frontier_curves(table, table.runs), seed_noise(table.runs), replicates=300, seed=0)
    truth = HOFFMANN.frontier_exponent  # alpha beta / (alpha + beta) = 0.1535
    assert fit.params["alpha"].contains(truth)
    assert fit.params["alpha"].value == pytest.approx(truth, abs=0.02)
    assert fit.noise.source.startswith("repeated seeds")
    # The fitted curve tracks the law's true compute-optimal loss within a few per cent over the data.
    c = np.geomspace(fit.envelope["flops"].min(), fit.envelope["flops"].max(), 5)
    np.testing.assert_allclose(fit.predict(c), HOFFMANN.frontier(c), rtol=0.03)


def test_noise_free_power_law_is_exact():
    c = np.geomspace(1e12, 1e16, 30)
    curves = pd.DataFrame({"run_id": np.arange(c.size).astype(str), "flops": c, "loss": 1.5 + 300 * c ** -0.2})
    fit = fit_frontier(curves, SeedNoise(1e-4, 0, "given"), replicates=50)
    assert fit.params["alpha"].value == pytest.approx(0.2, rel=1e-3)
    assert fit.params["E"].value == pytest.approx(1.5, rel=1e-3)
    assert fit.params["A"].value == pytest.approx(300, rel=1e-2)


def test_too_narrow_or_bad_input_is_refused():
    curves = pd.DataFrame({"run_id": ["a", "b"], "flops": [1e12, 1.1e12], "loss": [3.0, 2.9]})
    with pytest.raises(AnalysisError, match="envelope has .* points"):
        fit_frontier(curves)
    curves = pd.DataFrame({"run_id": ["a"], "flops": [1e12], "loss": [-1.0]})
    with pytest.raises(AnalysisError, match="non-positive or non-finite"):
        fit_frontier(curves)
    with pytest.raises(AnalysisError, match="missing \\['loss'\\]"):
        fit_frontier(pd.DataFrame({"run_id": ["a"], "flops": [1.0]}))


def test_resolved_floor_is_where_a_larger_run_first_holds_the_envelope():
    from analysis.fit.frontier import resolved_floor

    flops = np.geomspace(1e9, 1e12, 25)
    small = 3.0 * flops ** -0.05  # wins early, flattens
    large = 12.0 * flops ** -0.11  # overtakes it at C = 4^(1/0.06) ~ 1.1e10
    curves = pd.DataFrame({"run_id": ["s"] * 25 + ["l"] * 25, "flops": np.r_[flops, flops],
                           "loss": np.r_[small, large]})
    floor = resolved_floor(curves, pd.Series({"s": 1e4, "l": 1e5}))
    cross = 4.0 ** (1 / 0.06)
    assert cross <= floor <= cross * 10 ** (1 / 8) * 1.01  # the first envelope bin past the crossing
    early = curves.assign(loss=np.r_[small, np.where(flops < 2e9, small - 0.5, large)])  # a lucky early dip
    # from where it holds for good
    assert resolved_floor(early, pd.Series({"s": 1e4, "l": 1e5})) == pytest.approx(floor)
    behind = curves.assign(loss=np.r_[small, small + 1.0])  # the larger run never catches up
    assert resolved_floor(behind, pd.Series({"s": 1e4, "l": 1e5})) is None  # the smallest always wins: unresolved


def straddle_curves() -> pd.DataFrame:
    """The structures_gpt2 bug in miniature. Floor 1e12 (the small run's final FLOPs). Run m, evaluated every
    0.08 decade off the bin grid (points at 10^11.99 and 10^12.07 around the floor), is the best run from
    the floor on; run big is evaluated only at log-spaced points, one of them (10^12.02) just above the floor,
    where it is far behind m."""
    law = lambda c: 2.0 + 0.8 * (c / 1e12) ** -0.3  # noqa: E731
    m = 10 ** (11.99 + 0.08 * np.arange(-24, 29))  # 10^10.07 ... 10^14.23
    big = 10 ** np.array([10.0, 12.02, 13.0, 14.3])
    small = np.geomspace(1e10, 1e12, 9)
    return pd.DataFrame({"run_id": ["m"] * m.size + ["big"] * big.size + ["s"] * small.size,
                         "flops": np.r_[m, big, small],
                         "loss": np.r_[law(m), law(big) + 0.4 * (big < 1e13), law(small) + 0.6]})


def test_the_floor_drops_bins_after_whole_curves_are_interpolated():
    curves = straddle_curves()
    fit = fit_frontier(curves, SeedNoise(0.01, 0, "given"), replicates=20)
    first = fit.envelope.iloc[0]
    # The first bin is at the floor, 1e12. Before the fix the rows below the floor were dropped before
    # interpolating: m's curve then started at 10^12.07 (in the next bin) and the bin went to big's raw point at
    # 10^12.02, loss 2.0 + 0.8 * 10^(-0.3 * 0.02) + 0.4 = 3.189. Now it is m's curve interpolated (log-log)
    # between its points at 10^11.99 and 10^12.07: by hand, log L = (7/8) log L(10^11.99) + (1/8) log L(10^12.07).
    law = lambda lc: 2.0 + 0.8 * 10 ** (-0.3 * (lc - 12))  # noqa: E731
    expected = np.exp(7 / 8 * np.log(law(11.99)) + 1 / 8 * np.log(law(12.07)))
    assert first["flops"] == pytest.approx(1e12)
    assert first["run_id"] == "m" and first["loss"] == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(2.8, abs=0.002)  # the law at the floor, far below big's 3.19
    # No raw point is a candidate: every envelope point sits on a bin centre (1/8 decade).
    k = np.log10(fit.envelope["flops"].to_numpy()) * 8
    np.testing.assert_allclose(k, np.rint(k), atol=1e-9)


def test_seeds_are_averaged_before_the_envelope_minimum():
    flops = np.geomspace(1e10, 1e12, 17)  # on bin centres: 1/8 decade apart
    law = 2.0 + 30 * flops ** -0.2
    curves = pd.DataFrame({
        "run_id": np.repeat(["a0", "a1", "b"], flops.size), "flops": np.tile(flops, 3),
        "loss": np.r_[law * 0.97, law * 1.03, law * 0.99], "config": np.repeat(["a", "a", "b"], flops.size)})
    grid = envelope_grid(curves, per_decade=8)
    assert list(grid.run_ids) == ["a0", "b"] and list(grid.seeds) == [2, 1]
    # config a's seed mean in log-loss: log(law) + (log 0.97 + log 1.03) / 2, above b's log(law) + log 0.99
    c, loss, kept = lower_envelope(grid.log_loss, grid.log_flops)
    np.testing.assert_allclose(np.exp(loss[kept]), law * 0.99, rtol=1e-12)  # the one-seed b, not seed a0's 0.97
    np.testing.assert_allclose(grid.log_loss[0], np.log(law) + 0.5 * np.log(0.97 * 1.03), rtol=1e-12)
    # a bin only one seed covers is left out of the mean
    short = curves[~((curves["run_id"] == "a1") & (curves["flops"] > 1.1e11))]
    grid = envelope_grid(short, per_decade=8)
    assert np.isinf(grid.log_loss[0, flops > 1.1e11]).all() and np.isfinite(grid.log_loss[0, flops < 1e11]).all()
