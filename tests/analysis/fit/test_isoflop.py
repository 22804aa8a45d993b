"""Approach 2: per-budget optima, edge budgets, seed noise and the N* ~ C^a law."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import AnalysisError, fit_isoflop, table_from_records
from analysis.fit.inputs import isoflop_points, seed_noise
from analysis.fit.isoflop import assign_budgets
from analysis.fit.noise import SeedNoise
from analysis.io.synthetic import HOFFMANN, SyntheticStructure, SyntheticSweep


def parabola_points(budgets, optimum, sizes=np.geomspace(1e6, 1e9, 7), depth=0.02):
    """log L = 1 + depth (log N - log N*(C))^2 exactly: the argmin is known."""
    rows = []
    for c in budgets:
        for n in sizes:
            rows.append({"flops": c, "n": n, "loss": np.exp(1 + depth * (np.log(n) - np.log(optimum(c))) ** 2)})
    return pd.DataFrame(rows)


def test_noise_free_optima_and_exponent():
    optimum = lambda c: 3e7 * (c / 1e18) ** 0.5  # noqa: E731
    points = parabola_points(np.geomspace(1e17, 1e19, 5), optimum)
    points = pd.concat([points, points.assign(loss=points["loss"] * 1.001)])  # two "seeds" per point
    fit = fit_isoflop(points, replicates=200, seed=0)
    used = fit.budgets[fit.budgets["used"]]
    assert len(used) == 5
    # Akima on a quadratic is not exact, but the argmin is within a small fraction of the grid step.
    np.testing.assert_allclose(np.log(used["n_star"]), np.log(optimum(used["flops"])), atol=0.05)
    assert fit.a.value == pytest.approx(0.5, abs=0.01)
    assert fit.b.value == pytest.approx(1 - fit.a.value)
    np.testing.assert_allclose(used["d_star"], used["flops"] / (6 * used["n_star"]))
    assert fit.noise.source.startswith("repeated seeds")


def test_edge_budgets_are_dropped_and_reported():
    optimum = lambda c: 3e7 * (c / 1e18) ** 0.5  # noqa: E731
    points = parabola_points([1e17, 1e18, 1e19, 1e22, 1e23], optimum)  # the largest two peak beyond 1e9
    fit = fit_isoflop(points, replicates=100, seed=0)
    dropped = fit.budgets[~fit.budgets["used"]]
    assert list(dropped["flops"]) == pytest.approx([1e22, 1e23])
    assert all("argmin at the largest N" in note for note in dropped["note"])
    assert any("dropped" in n for n in fit.notes)
    assert fit.noise.source.startswith("residuals")


def test_recovers_the_allocation_exponent_of_a_known_law():
    table = table_from_records(SyntheticSweep([SyntheticStructure("dense", HOFFMANN)], seed=4,
                                              budgets=tuple(1e13 * 2.0 ** k for k in range(10))).records())
    fit = fit_isoflop(isoflop_points(table, table.runs), seed_noise(table.runs), replicates=500, seed=0)
    assert fit.a.contains(HOFFMANN.a)  # beta / (alpha + beta) = 0.4516
    assert fit.a.value == pytest.approx(HOFFMANN.a, abs=0.08)
    # N* at a budget, with its interval, holds the law's value; raw params at N* are interpolated.
    assert fit.predict_n(2e15).contains(float(HOFFMANN.n_opt(2e15)))
    assert fit.budgets["params_star"].notna().all()


def test_budgets_cluster_within_tolerance():
    flops = np.array([1e15, 1.04e15, 0.97e15, 2e15, 2.05e15])
    budgets = assign_budgets(flops, 0.1)
    assert len(np.unique(budgets)) == 2
    assert budgets[0] == pytest.approx(np.exp(np.log([1e15, 1.04e15, 0.97e15]).mean()))


def test_degenerate_input_messages():
    one = parabola_points([1e18], lambda c: 3e7)
    with pytest.raises(AnalysisError, match="one FLOP budget"):
        fit_isoflop(one)
    edges = parabola_points([1e18, 2e18], lambda c: 1e12)  # optimum beyond every grid
    with pytest.raises(AnalysisError, match="needs 2 or more budgets with an interior optimum, got 0"):
        fit_isoflop(edges)
    two_sizes = parabola_points([1e18, 4e18], lambda c: 3e7, sizes=np.array([1e6, 1e7]))
    with pytest.raises(AnalysisError, match="cannot measure noise: no repeated seeds"):
        fit_isoflop(two_sizes)
    with pytest.raises(AnalysisError, match="1e\\+18: only 2 sizes \\(needs 3\\)"):
        fit_isoflop(two_sizes, SeedNoise(0.01, 0, "given"))


def budgets_with(first_log_loss: list[float]) -> pd.DataFrame:
    """Budget 1e17 has the given log-losses at sizes 1e6 * e^(0..4); budgets 1e18 and 1e19 are clean parabolas."""
    sizes = 1e6 * np.exp(np.arange(5.0))
    first = pd.DataFrame({"flops": 1e17, "n": sizes, "loss": np.exp(first_log_loss)})
    rest = parabola_points([1e18, 1e19], lambda c: 1e6 * np.exp(2.0), sizes=sizes)
    return pd.concat([first, rest], ignore_index=True)


def test_interior_is_judged_on_measured_sizes_not_on_the_interpolant():
    # The measured minimum is the smallest size; Akima's argmin lies at log N - log 1e6 = 0.48 (inside the grid),
    # which the old rule (argmin not at a grid end) called interior. No smaller size is measured higher: dropped.
    fit = fit_isoflop(budgets_with([1.0, 1.001, 1.1, 1.3, 1.6]), SeedNoise(0.01, 0, "given"), replicates=100)
    row = fit.budgets.iloc[0]  # budget 1e17
    assert np.log(row["n_star"] / 1e6) == pytest.approx(0.48)
    assert not row["used"]
    assert row["note"] == "argmin at the smallest N (no smaller measured size has a higher loss): dropped"
    assert fit.budgets["used"].sum() == 2


def test_minimum_loss_is_not_below_the_measurements_by_more_than_the_noise():
    # Akima overshoots 0.053 below the lowest measured log-loss (1.0) between sizes 1 and 2; that minimum is
    # interior (1.3 on the left, 1.005 on the right are higher), and L* is clipped to exp(1.0 - sigma).
    fit = fit_isoflop(budgets_with([1.3, 1.0, 1.005, 1.3, 1.6]), SeedNoise(0.01, 0, "given"), replicates=100)
    row = fit.budgets.iloc[0]  # budget 1e17
    assert row["used"]
    assert row["loss_star"] == pytest.approx(np.exp(1.0 - 0.01), rel=1e-12)
    # the clean parabolas' minimum (log L = 1 at a measured size) is not clipped: L* = e exactly
    assert fit.budgets.iloc[1]["loss_star"] == pytest.approx(np.exp(1.0), rel=1e-9)
