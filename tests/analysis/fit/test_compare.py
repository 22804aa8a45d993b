"""Structure vs dense comparisons, Einsum trends, extrapolation checks and learning-rate transfer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import (compute_multiplier, exponent_difference, fit_isoflop, frontier_holdout, isoflop_holdout,
                      lr_drift, lr_sweeps, optimal_lr, table_from_records, taxonomy_trends)
from analysis.fit.bootstrap import percentile_interval
from analysis.fit.frontier import PARAMS, FrontierFit
from analysis.fit.inputs import frontier_curves, isoflop_points, seed_noise
from analysis.fit.lr_transfer import NOT_TESTED, transfer_comparison
from analysis.fit.noise import SeedNoise
from analysis.io.synthetic import HOFFMANN, Law, SyntheticStructure, SyntheticSweep


def frontier(E: float, A: float, alpha: float, spread: float = 0.0, seed: int = 0) -> FrontierFit:
    """A FrontierFit with given parameters and replicates jittered by `spread` (relative)."""
    rng = np.random.default_rng(seed)
    point = np.array([E, A, alpha])
    reps = point * np.exp(rng.normal(0, spread, (400, 3)))
    params = {k: percentile_interval(point[i], reps[:, i]) for i, k in enumerate(PARAMS)}
    env = pd.DataFrame({"flops": [1e12, 1e16], "loss": [3.0, 2.0], "run_id": ["a", "b"]})
    return FrontierFit(params, reps, env, SeedNoise(0.01, 0, "given"), 0.0)


def test_multiplier_of_a_law_shifted_in_compute():
    # L_s(C) = L_d(k C) means the structure reaches dense's loss with k times less compute, at every budget.
    k, E, A, alpha = 3.0, 1.7, 400.0, 0.15
    dense = frontier(E, A, alpha)
    struct = frontier(E, A * k ** -alpha, alpha)
    for c in (1e14, 1e18):
        assert compute_multiplier(struct, dense, c).value == pytest.approx(k)
    worse = frontier(2.5, A, alpha)  # irreducible loss above dense's loss at 1e18: never reaches it
    assert compute_multiplier(worse, dense, 1e18).value == 0.0


def test_multiplier_and_exponent_intervals_cover_the_truth():
    dense, struct = frontier(1.7, 400, 0.15, 0.02, seed=1), frontier(1.7, 300, 0.17, 0.02, seed=2)
    m = compute_multiplier(struct, dense, 1e16)
    assert m.lo < m.value < m.hi
    d = exponent_difference(struct, dense)
    assert d.value == pytest.approx(0.02) and d.lo < 0.02 < d.hi


def test_taxonomy_trend_slopes():
    rows = pd.DataFrame({"label": ["a", "b", "c"], "omega": [0.0, 0.25, 0.5], "psi": [1.0, 1.0, 1.0],
                         "nu": [1.0, 0.75, 0.5]})
    fits = {lab: frontier(1.7, 400, 0.2 - 0.1 * om, 0.01, seed=i)
            for i, (lab, om) in enumerate(zip(rows["label"], rows["omega"]))}
    trends = {t.coordinate: t for t in taxonomy_trends(rows, fits)}
    assert set(trends) == {"omega", "nu"}  # psi does not vary
    assert trends["omega"].slope.value == pytest.approx(-0.1)
    assert trends["nu"].slope.value == pytest.approx(0.1)
    assert trends["omega"].slope.lo < -0.1 < trends["omega"].slope.hi


def test_extrapolation_to_held_out_budgets():
    sweep = SyntheticSweep([SyntheticStructure("dense", HOFFMANN)], seed=2,
                           budgets=tuple(1e13 * 2.0 ** k for k in range(9)), diverged=0)
    table = table_from_records(sweep.records())
    noise = seed_noise(table.runs)
    curves = frontier_curves(table, table.runs)
    front = frontier_holdout(curves, noise, replicates=200)
    assert list(front["held_out"]) == [1, 2, 2]
    assert front["inside"].all(), front
    assert (front["rel_error"].abs() < 0.02).all()
    points = isoflop_points(table, table.runs)
    iso = isoflop_holdout(points, fit_isoflop(points, noise, replicates=200), noise, replicates=200)
    assert list(iso["held_out"]) == [1, 2, 2]
    checked = iso[iso["observed"].notna()]
    assert len(checked) >= 2 and checked["inside"].all(), iso


def test_optimal_lr_is_the_parabola_vertex():
    lrs = np.array([1e-3, 2e-3, 4e-3, 8e-3])
    star = 3e-3
    losses = np.exp(1 + 0.05 * np.log(lrs / star) ** 2)
    lr, edge = optimal_lr(lrs, losses)
    assert lr == pytest.approx(star, rel=1e-6) and not edge
    lr, edge = optimal_lr(lrs, 1 / lrs)  # loss falls all the way: the optimum is at the sweep's edge
    assert edge and lr == pytest.approx(8e-3)


def test_lr_transfer_drift_per_parametrization():
    structures = [SyntheticStructure("dense", HOFFMANN),
                  SyntheticStructure("kron", Law(1.8, 450, 410.7, 0.27, 0.28), lr_drift=0.5)]
    sweep = SyntheticSweep(structures, budgets=(), diverged=0, lr_widths=(64, 128, 256, 512), sigma_run=0,
                           sigma_eval=0, lrs=tuple(3e-3 * 2.0 ** (k / 2) for k in range(-6, 9)))
    table = table_from_records(sweep.records())
    sweeps = lr_sweeps(table.runs)
    assert len(sweeps) == 8 and not sweeps["at_edge"].any()
    drift = lr_drift(sweeps).set_index("label")
    assert drift.loc["dense", "parametrization"] == "structure_aware"
    assert abs(drift.loc["dense", "slope"]) < 1e-9  # transfers: lr* flat in width
    assert drift.loc["kron", "slope"] == pytest.approx(0.5, abs=0.02)  # naive: lr* grows ~ width^0.5
    assert drift.loc["kron", "factor_per_doubling"] == pytest.approx(2 ** 0.5, rel=0.02)
    dense = sweeps[sweeps["label"] == "dense"]
    np.testing.assert_allclose(dense["lr_star"], 3e-3, rtol=1e-6)  # the parabola vertex is exact here


KRON = Law(1.8, 450, 410.7, 0.27, 0.28)
KRON_LABELS = {"dense": "dense", "kron_sa": "kron", "kron_naive": "kron"}


def transfer_runs(sigma: float, seeds: int = 1) -> pd.DataFrame:
    """An LR sweep at 4 widths: dense and kron structure-aware transfer (lr* flat), kron naive drifts by +0.6;
    seed-to-seed noise sigma in log L."""
    structures = [SyntheticStructure("dense", HOFFMANN), SyntheticStructure("kron", KRON, label="kron_sa"),
                  SyntheticStructure("kron", KRON, lr_drift=0.6, label="kron_naive")]
    sweep = SyntheticSweep(structures, budgets=(), diverged=0, lr_widths=(64, 128, 256, 512), sigma_run=sigma,
                           sigma_eval=0, lrs=tuple(3e-3 * 2.0 ** (k / 2) for k in range(-6, 9)), lr_seeds=seeds)
    return table_from_records(sweep.records()).runs


def test_transfer_with_small_noise_is_reproduced():
    out = transfer_comparison(transfer_runs(0.002), KRON_LABELS, SeedNoise(0.002, 0, "test"), 400, seed=1)
    assert list(out["structure"]) == ["kron"]  # dense has no naive sweep to compare with
    (r,) = out.itertuples()
    assert abs(r.slope_structure_aware) < 0.1 and r.slope_naive == pytest.approx(0.6, abs=0.1)
    assert r.gap == pytest.approx(abs(r.slope_naive) - abs(r.slope_structure_aware))
    assert 0 < r.gap_lo < r.gap < r.gap_hi and r.level == 0.95
    assert r.p_clear > 0.95 and r.verdict == "reproduced"


def test_transfer_with_noise_swamping_the_lr_curve_is_not_resolved():
    (r,) = transfer_comparison(transfer_runs(0.05), KRON_LABELS, SeedNoise(0.05, 0, "test"), 400,
                               seed=1).itertuples()
    assert r.gap_lo < 0 < r.gap_hi and r.verdict == "not resolved"
    assert 0.2 < r.p_clear < 0.8  # a coin flip whether it drifts clearly less


def test_transfer_without_a_noise_level_is_not_tested():
    (r,) = transfer_comparison(transfer_runs(0.002), KRON_LABELS).itertuples()  # one seed, no --loss-noise
    assert r.verdict == NOT_TESTED == "no noise level: not tested"
    assert r.gap > 0.3 and np.isnan(r.gap_lo) and np.isnan(r.gap_hi) and np.isnan(r.p_clear) and r.noise is None


def test_transfer_noise_is_measured_from_seed_repeats():
    rows = []
    for label, param, step in (("kron_sa", "structure_aware", 0.02), ("kron_naive", "naive", 0.04)):
        for width in (16, 32):
            for lr in (1e-3, 2e-3, 4e-3):
                for seed in (0, 1):  # the seeds' log-losses differ by `step` at every point
                    rows.append({"experiment": "e", "label": label, "parametrization": param, "width": width,
                                 "depth": 2, "tokens_target": 1e6, "lr": lr, "batch_size": 32, "seed": seed,
                                 "final_val_loss": np.exp(1 + np.log(lr / 2e-3) ** 2 + seed * step)})
    (r,) = transfer_comparison(pd.DataFrame(rows), KRON_LABELS, replicates=50).itertuples()
    # pooled within-point variance, ddof 1: a pair differing by d has variance d^2 / 2; 6 pairs of each step
    assert r.sigma == pytest.approx(np.sqrt((0.02 ** 2 / 2 + 0.04 ** 2 / 2) / 2))
    assert r.noise.startswith(f"log-loss std {r.sigma:.3g} from repeated seeds") and r.verdict != NOT_TESTED


def test_transfer_bootstrap_is_deterministic_under_a_seed():
    runs = transfer_runs(0.01, seeds=2)
    first, again = (transfer_comparison(runs, KRON_LABELS, replicates=200, seed=3) for _ in range(2))
    pd.testing.assert_frame_equal(first, again)
    other = transfer_comparison(runs, KRON_LABELS, replicates=200, seed=4)
    assert other["gap"].equals(first["gap"]) and not other["gap_lo"].equals(first["gap_lo"])


def test_held_out_frontier_loss_is_the_lowest_seed_mean():
    from analysis.fit.extrapolate import _lowest_mean
    reads = pd.DataFrame({"config": [0, 0, 1], "loss": [2.0, 2.2, 2.05]})
    # config 0's seeds: exp(mean(log 2.0, log 2.2)) = sqrt(4.4) = 2.098, above config 1's 2.05 (not seed 0's 2.0)
    assert _lowest_mean(reads) == pytest.approx(2.05)
    assert _lowest_mean(reads.assign(loss=[2.0, 2.08, 2.05])) == pytest.approx(np.sqrt(2.0 * 2.08))
    assert np.isnan(_lowest_mean(reads.head(0)))
