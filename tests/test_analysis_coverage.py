"""Interval coverage over repeated synthetic draws: each fit's intervals hold the true exponent about as often
as their level says (95% and 80%), so they are neither too narrow nor uselessly wide."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import fit_frontier, fit_isoflop, fit_parametric, table_from_records
from analysis.bootstrap import percentile_interval
from analysis.inputs import frontier_curves, isoflop_points, seed_noise
from analysis.synthetic import HOFFMANN, SyntheticStructure, SyntheticSweep

DRAWS = 40
REPLICATES = 200


def draw(seed: int):
    sweep = SyntheticSweep([SyntheticStructure("dense", HOFFMANN)], seed=seed, diverged=0,
                           budgets=tuple(1e13 * 2.0 ** k for k in range(10)))
    return table_from_records(sweep.records())


def coverage(samples: list[tuple[float, np.ndarray]], truth: float, level: float) -> float:
    """Fraction of draws whose percentile interval (point, replicates) at `level` holds `truth`."""
    return float(np.mean([percentile_interval(v, reps, level).contains(truth) for v, reps in samples]))


def check(samples: list[tuple[float, np.ndarray]], truth: float) -> None:
    at95, at80 = coverage(samples, truth, 0.95), coverage(samples, truth, 0.80)
    # With 40 draws a true 95% rate gives >= 34 hits with probability ~0.99, a true 80% rate 25..38.
    assert at95 >= 0.85, (at95, at80)
    assert 0.6 <= at80 <= 0.95, (at95, at80)
    estimates = np.array([v for v, _ in samples])
    assert abs(np.median(estimates) - truth) < np.std(estimates)  # no bias beyond the noise


@pytest.mark.slow
def test_parametric_coverage():
    alpha, beta, a = [], [], []
    for seed in range(DRAWS):
        r = draw(seed).runs
        fit = fit_parametric(r["n_eff"], r["tokens"], r["final_val_loss"], replicates=REPLICATES, seed=seed)
        reps = fit.replicates
        alpha.append((fit.params["alpha"].value, reps[:, 3]))
        beta.append((fit.params["beta"].value, reps[:, 4]))
        a.append((fit.params["a"].value, reps[:, 4] / (reps[:, 3] + reps[:, 4])))
    check(alpha, HOFFMANN.alpha)
    check(beta, HOFFMANN.beta)
    check(a, HOFFMANN.a)


@pytest.mark.slow
def test_isoflop_coverage():
    samples = []
    for seed in range(DRAWS):
        table = draw(seed)
        fit = fit_isoflop(isoflop_points(table.runs), seed_noise(table.runs), replicates=REPLICATES, seed=seed)
        samples.append((fit.a.value, fit.replicates[:, 0]))
    check(samples, HOFFMANN.a)


@pytest.mark.slow
def test_frontier_coverage():
    samples = []
    for seed in range(DRAWS):
        table = draw(seed)
        fit = fit_frontier(frontier_curves(table, table.runs), seed_noise(table.runs), replicates=REPLICATES,
                           seed=seed)
        samples.append((fit.params["alpha"].value, fit.replicates[:, 2]))
    check(samples, HOFFMANN.frontier_exponent)
