"""Approach 3: recovery of the published Chinchilla law, its allocation, the batched refits, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from analysis import AnalysisError, fit_parametric
from analysis.fit.parametric import _model
from analysis.fit.robust_fit import fit_multistart, make_problem, solve_batched
from analysis.io.synthetic import HOFFMANN


def chinchilla_grid(noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """9 isoFLOP budgets 6e18..3e21 (as in Hoffmann et al.), 9 sizes each spanning 1/8..8 x N_opt."""
    rng = np.random.default_rng(seed)
    n, d = [], []
    for c in np.geomspace(6e18, 3e21, 9):
        for f in np.geomspace(1 / 8, 8, 9):
            size = HOFFMANN.n_opt(c) * f
            n.append(size)
            d.append(c / (6 * size))
    n, d = np.array(n), np.array(d)
    return n, d, HOFFMANN.loss(n, d) * np.exp(rng.normal(0, noise, n.size))


def test_reproduces_published_hoffmann_fit():
    """Data from E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28 with 0.5% noise: every parameter comes back."""
    n, d, loss = chinchilla_grid(0.005, seed=0)
    fit = fit_parametric(n, d, loss, replicates=400, seed=0)
    truth = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    for name, value in truth.items():
        assert fit.params[name].contains(value), (name, fit.params[name])
    assert fit.params["alpha"].value == pytest.approx(0.34, abs=0.01)
    assert fit.params["beta"].value == pytest.approx(0.28, abs=0.01)
    assert fit.params["E"].value == pytest.approx(1.69, abs=0.06)
    # The compute-optimal allocation a = beta/(alpha+beta) = 0.4516 (Chinchilla's approach 3: ~0.46).
    assert fit.params["a"].value == pytest.approx(0.4516, abs=0.01)
    assert fit.params["a"].contains(0.28 / 0.62)
    assert fit.params["a"].hi - fit.params["a"].lo < 0.05


def test_closed_form_allocation_is_the_constrained_minimum():
    n, d, loss = chinchilla_grid(0.0, seed=0)
    fit = fit_parametric(n, d, loss, replicates=20)
    budget = 1e22
    opt = fit.optimal_allocation(budget)
    # Minimise L(N, C/(6N)) over log N numerically with the fitted parameters.
    res = minimize_scalar(lambda ln: float(fit.predict(np.exp(ln), budget / (6 * np.exp(ln)))),
                          bounds=(np.log(1e8), np.log(1e12)), method="bounded", options={"xatol": 1e-8})
    assert opt["n_opt"].value == pytest.approx(np.exp(res.x), rel=1e-4)
    assert opt["d_opt"].value * opt["n_opt"].value * 6 == pytest.approx(budget)
    # Noise-free data: the fitted allocation matches the true law's.
    assert opt["n_opt"].value == pytest.approx(HOFFMANN.n_opt(budget), rel=0.02)


def test_batched_refits_match_lbfgs_on_each_replicate():
    """The vectorised bootstrap solver reaches the same optimum as L-BFGS-B run replicate by replicate."""
    n, d, loss = chinchilla_grid(0.01, seed=3)
    xn, xd = np.log(n) - np.log(n).mean(), np.log(d) - np.log(d).mean()
    bounds = [(-200, 200), (0, 10), (-200, 200), (0, 10), (-200, 200)]
    counts = np.random.default_rng(1).multinomial(n.size, np.full(n.size, 1 / n.size), size=4).astype(float)
    start = np.array([[0.0, 0.3, 0.0, 0.3, 0.5]])
    theta, fval = solve_batched(make_problem(_model, np.log(loss), (xn, xd), bounds, w=counts), start)
    grid = np.array([[a, al, b, be, e] for a in (-1, 0, 1) for al in (0.2, 0.5) for b in (-1, 0, 1)
                     for be in (0.2, 0.5) for e in (0.0, 0.5)])
    for r in range(len(counts)):
        single = make_problem(_model, np.log(loss), (xn, xd), bounds, w=counts[r])
        ref_theta, ref_f = fit_multistart(single, grid)
        assert fval[r] <= ref_f * (1 + 1e-7)
        np.testing.assert_allclose(theta[r, [1, 3]], ref_theta[[1, 3]], atol=2e-3)


def test_same_seed_same_intervals():
    n, d, loss = chinchilla_grid(0.01, seed=1)
    a = fit_parametric(n, d, loss, replicates=50, seed=7)
    b = fit_parametric(n, d, loss, replicates=50, seed=7)
    assert a.params["alpha"] == b.params["alpha"]


@pytest.mark.parametrize("rows, message", [
    (5, "needs at least 8 runs"),
    (0, "needs at least 8 runs"),
])
def test_too_few_points(rows, message):
    n, d, loss = chinchilla_grid(0.01, seed=0)
    with pytest.raises(AnalysisError, match=message):
        fit_parametric(n[:rows], d[:rows], loss[:rows])


def test_bad_values_and_single_size_are_named():
    n, d, loss = chinchilla_grid(0.01, seed=0)
    bad = loss.copy()
    bad[4] = -1
    with pytest.raises(AnalysisError, match="non-positive or non-finite loss.*row 4"):
        fit_parametric(n, d, bad)
    with pytest.raises(AnalysisError, match="3 distinct params"):
        fit_parametric(np.full(n.size, 1e9), d, loss)
    with pytest.raises(AnalysisError, match="replicates=3: "):
        fit_parametric(n, d, loss, replicates=3)
