"""Interval coverage over repeated synthetic draws: each fit's intervals hold the true exponent about as often
as their level says (95% and 80%), so they are neither too narrow nor uselessly wide."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.interpolate import Akima1DInterpolator

from analysis import fit_frontier, fit_isoflop, fit_parametric, table_from_records
from analysis.fit.bootstrap import percentile_interval
from analysis.fit.inputs import frontier_curves, isoflop_points, seed_noise
from analysis.io.synthetic import HOFFMANN, SyntheticStructure, SyntheticSweep
from analysis.fit.tables import isoflop_from_table

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
        fit = fit_isoflop(isoflop_points(table, table.runs), seed_noise(table.runs), replicates=REPLICATES, seed=seed)
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


def published_style_table(seed: int, sigma: float) -> pd.DataFrame:
    """9 budgets (6e18-3e21) x 9 sizes around N*(C), losses with absolute Gaussian noise sigma (Porian-style)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in np.geomspace(6e18, 3e21, 9):
        centre = np.log(HOFFMANN.n_opt(c)) + rng.uniform(-0.3, 0.3)
        for n in np.exp(centre + np.linspace(-1.5, 1.5, 9)):
            rows.append({"params": n, "flops": c, "loss": HOFFMANN.loss(n, c / (6 * n)) + rng.normal(0, sigma)})
    return pd.DataFrame(rows)


def seed_noise_bootstrap(df: pd.DataFrame, sigma: float, replicates: int, rng) -> np.ndarray:
    """The standard seed-noise bootstrap (Porian et al.): add N(0, sigma) to every loss, Akima argmin per budget
    (edge optima dropped), least squares of log N* on log C; the replicates' exponents."""
    slopes = []
    budgets = [g.sort_values("params") for _, g in df.groupby("flops")]
    for _ in range(replicates):
        log_c, log_n = [], []
        for g in budgets:
            x = np.log(g["params"].to_numpy())
            y = np.log(g["loss"].to_numpy() + rng.normal(0, sigma, len(g)))
            fine = np.linspace(x[0], x[-1], (len(x) - 1) * 25 + 1)
            k = int(np.argmin(Akima1DInterpolator(x, y)(fine)))
            if 0 < k < fine.size - 1:
                log_c.append(np.log(g["flops"].iloc[0]))
                log_n.append(fine[k])
        slopes.append(np.polyfit(log_c, log_n, 1)[0] if len(log_c) >= 2 else np.nan)
    return np.array(slopes)


@pytest.mark.slow
def test_loss_noise_interval_matches_the_seed_noise_bootstrap_and_covers():
    """With --loss-noise the exponent interval is about as wide as the standard bootstrap's at the same noise
    (no wider than ~2x), and it holds the true exponent about as often as its level says."""
    sigma, samples, ratios = 0.005, [], []
    for seed in range(DRAWS):
        df = published_style_table(seed, sigma)
        fit = isoflop_from_table(df, "params", "loss", flops_col="flops", loss_noise=sigma, replicates=REPLICATES,
                                 seed=seed)
        samples.append((fit.a.value, fit.replicates[:, 0]))
        ref = seed_noise_bootstrap(df, sigma, REPLICATES, np.random.default_rng(1000 + seed))
        lo, hi = np.nanpercentile(ref, [2.5, 97.5])
        ratios.append((fit.a.hi - fit.a.lo) / (hi - lo))
    ratio = float(np.median(ratios))
    print(f"median width ratio (--loss-noise / seed-noise bootstrap): {ratio:.3f}; "
          f"coverage 95%: {coverage(samples, HOFFMANN.a, 0.95):.3f}, 80%: {coverage(samples, HOFFMANN.a, 0.8):.3f}")
    assert 0.5 <= ratio <= 2.0
    check(samples, HOFFMANN.a)
