"""Chinchilla approach 2: isoFLOP curves, the loss-minimising size N*(C) per budget, and N* ~ C^a, D* ~ C^b.

Runs are grouped into budgets (final FLOPs within `budget_tolerance` of each other). Per budget, log L vs
log N is Akima-interpolated on 25 points per grid interval and its argmin is N*(C); D*(C) = C / (6 N*).
The minimum is interior only if a measured size on each side of the argmin has a higher (seed-averaged) loss
than the lowest measured one (judged on measurements, not on the interpolant, whose overshoot can place an
argmin beside an edge minimum); other budgets are dropped and reported (the optimum is off the grid). The
minimum loss L*(C) is the interpolant's minimum, but never below the lowest measured loss by more than that
point's noise (sigma / sqrt(seeds) in log-loss): Akima overshoot is not a measurement.

Bootstrap (after Porian et al.): each replicate adds N(0, sigma^2 / seeds) to every point's log-loss, sigma
being the seed noise measured from repeated seeds (else the residual spread of per-budget quadratic fits),
and recomputes every argmin. Per budget sigma(log N*) is the replicates' spread, floored at 0.33 x the
log-N grid step and divided by the fraction of replicates with an interior argmin (the same rule, on each
replicate's losses). The power law

    log N* = a log C + k     (weighted least squares, w = 1 / sigma(log N*)^2)

is refitted on every replicate for percentile intervals; D* = C / (6 N*) gives b = 1 - a exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.interpolate import Akima1DInterpolator

from analysis.fit.bootstrap import DEFAULT_LEVEL, DEFAULT_REPLICATES, Interval, check_settings, percentile_interval
from analysis.errors import AnalysisError
from analysis.fit.noise import SeedNoise, measure_seed_noise

DEFAULT_BUDGET_TOLERANCE = 0.1
_FINE_PER_INTERVAL = 25
_SIGMA_FLOOR_STEPS = 0.33


def assign_budgets(flops: np.ndarray, tolerance: float = DEFAULT_BUDGET_TOLERANCE) -> np.ndarray:
    """Budget per row: sorted FLOPs start a new budget after a gap above `tolerance` (relative); geometric means."""
    logc = np.log(np.asarray(flops, float))
    order = np.argsort(logc)
    cluster = np.concatenate([[0], np.cumsum(np.diff(logc[order]) > np.log1p(tolerance))])
    labels = np.empty_like(cluster)
    labels[order] = cluster
    means = pd.Series(logc).groupby(labels).transform("mean").to_numpy()
    return np.exp(means)


@dataclass
class BudgetCurve:
    """One budget's isoFLOP points and its interpolant (log N grid, log L), for tables and plots."""

    flops: float
    n: np.ndarray
    loss: np.ndarray
    seeds: np.ndarray
    fine_log_n: np.ndarray
    fine_log_loss: np.ndarray


@dataclass
class IsoflopFit:
    """Per-budget optima and the N*(C), D*(C) power laws with bootstrap intervals."""

    budgets: pd.DataFrame  # flops, points, n_star (+ lo/hi), d_star, loss_star, sigma_log_n, valid_frac, used, note
    a: Interval
    b: Interval
    intercept: float
    replicates: np.ndarray  # [R, 2]: a, k per replicate
    noise: SeedNoise
    curves: list[BudgetCurve]
    level: float = DEFAULT_LEVEL
    notes: list[str] = field(default_factory=list)

    def predict_n(self, flops: float) -> Interval:
        """N*(C) from the power law with its bootstrap interval."""
        point = np.exp(self.a.value * np.log(flops) + self.intercept)
        reps = np.exp(self.replicates[:, 0] * np.log(flops) + self.replicates[:, 1])
        return percentile_interval(float(point), reps, self.level)

    def to_dict(self) -> dict:
        return {"a": self.a.to_dict(), "b": self.b.to_dict(), "intercept": self.intercept,
                "noise": {"sigma": self.noise.sigma, "source": self.noise.source},
                "budgets": self.budgets.to_dict(orient="records"), "notes": self.notes}


def _aggregate(points: pd.DataFrame) -> pd.DataFrame:
    """Mean log-loss over repeated rows (seeds) of the same budget and N; a `seeds` column weights rows."""
    seeds = points["seeds"].to_numpy(float) if "seeds" in points.columns else np.ones(len(points))
    df = points.assign(wlog=np.log(points["loss"].to_numpy(float)) * seeds, seeds=seeds)
    agg = {"wlog": ("wlog", "sum"), "seeds": ("seeds", "sum")}
    if "params" in df.columns:
        agg["params"] = ("params", "median")
    out = df.groupby(["budget", "n"], as_index=False).agg(**agg)
    return out.assign(log_loss=out["wlog"] / out["seeds"]).drop(columns="wlog")


def _residual_noise(table: pd.DataFrame) -> SeedNoise:
    """Pooled residual spread of per-budget quadratics in log N (used when no seeds repeat)."""
    sq, dof = 0.0, 0
    for _, g in table.groupby("budget"):
        if len(g) >= 4:
            x = np.log(g["n"].to_numpy())
            coef = np.polyfit(x, g["log_loss"].to_numpy(), 2)
            sq += float(((g["log_loss"].to_numpy() - np.polyval(coef, x)) ** 2).sum())
            dof += len(g) - 3
    if dof == 0:
        raise AnalysisError("isoflop: cannot measure noise: no repeated seeds and no budget with 4 or more sizes; "
                            "rerun a few configs with other seeds or pass a noise level")
    return SeedNoise(float(np.sqrt(sq / dof)), 0, "residuals of per-budget quadratic fits (no repeated seeds)")


def _check_points(points: pd.DataFrame) -> None:
    missing = {"flops", "n", "loss"} - set(points.columns)
    if missing:
        raise AnalysisError(f"isoflop: points need columns flops, n, loss; missing {sorted(missing)}")
    values = points[["flops", "n", "loss"]].to_numpy(float)
    bad = ~(np.isfinite(values) & (values > 0)).all(axis=1)
    if bad.any():
        raise AnalysisError(f"isoflop: {int(bad.sum())} rows have a non-positive or non-finite flops, n or loss; "
                            "drop them before fitting")


def fit_isoflop(points: pd.DataFrame, noise: SeedNoise | None = None, replicates: int = DEFAULT_REPLICATES,
                seed: int = 0, level: float = DEFAULT_LEVEL,
                budget_tolerance: float = DEFAULT_BUDGET_TOLERANCE) -> IsoflopFit:
    """Approach 2 on rows (flops, n, loss[, params]); repeated (budget, n) rows count as seeds."""
    check_settings(replicates, level)
    _check_points(points)
    pts = points.assign(budget=assign_budgets(points["flops"].to_numpy(float), budget_tolerance))
    if pts["budget"].nunique() < 2:
        raise AnalysisError(f"isoflop: all {len(pts)} runs fall in one FLOP budget ({pts['budget'].iloc[0]:.3g}); "
                            "a power law N* ~ C^a needs runs at 2 or more budgets (3+ for a useful interval)")
    table = _aggregate(pts)
    notes = []
    if noise is None:
        noise = measure_seed_noise(pts, ["budget", "n"], "loss")
        if noise is None:
            noise = _residual_noise(table)
            notes.append(f"seed noise from {noise.source}")
    rng = np.random.default_rng(seed)
    rows, curves, rep_log_n = [], [], []
    for budget, g in table.groupby("budget"):
        g = g.sort_values("n")
        row = {"flops": budget, "points": len(g), "n_star": np.nan, "n_star_lo": np.nan, "n_star_hi": np.nan,
               "d_star": np.nan, "loss_star": np.nan, "sigma_log_n": np.nan, "valid_frac": np.nan,
               "params_star": np.nan, "used": False, "note": ""}
        if len(g) < 3:
            row["note"] = f"only {len(g)} size{'s' if len(g) > 1 else ''} (needs 3)"
            rows.append(row)
            rep_log_n.append(np.full(replicates, np.nan))
            continue
        x, y, seeds = np.log(g["n"].to_numpy()), g["log_loss"].to_numpy(), g["seeds"].to_numpy()
        fine = np.linspace(x[0], x[-1], (len(x) - 1) * _FINE_PER_INTERVAL + 1)
        scale = noise.log_sigma(np.exp(y)) / np.sqrt(seeds)
        noisy = y[:, None] + rng.normal(0.0, 1.0, (len(x), replicates)) * scale[:, None]
        values = np.column_stack([y, noisy])  # [sizes, 1 + R]
        interp = Akima1DInterpolator(x, values, axis=0)(fine)
        arg = np.argmin(interp, axis=0)
        lower, upper = _sides(x, values, fine[arg])
        edge = ~(lower & upper)
        log_n_rep = fine[arg[1:]]
        valid = ~edge[1:]
        step = float(np.median(np.diff(x)))
        spread = float(np.std(log_n_rep[valid])) if valid.sum() > 1 else 0.0
        n_star = float(np.exp(fine[arg[0]]))
        # L* = max(interpolated minimum, lowest measured log L - its noise sigma / sqrt(seeds)): no overshoot
        low = int(np.argmin(y))
        loss_star = float(np.exp(max(interp[arg[0], 0], y[low] - scale[low])))
        row.update(n_star=n_star, d_star=budget / (6 * n_star), loss_star=loss_star,
                   valid_frac=float(valid.mean()),
                   sigma_log_n=max(spread, _SIGMA_FLOOR_STEPS * step) / max(float(valid.mean()), 1e-3))
        ci = percentile_interval(n_star, np.exp(log_n_rep), level)
        row.update(n_star_lo=ci.lo, n_star_hi=ci.hi)
        if "params" in g.columns:
            row["params_star"] = float(np.exp(np.interp(fine[arg[0]], x, np.log(g["params"].to_numpy(float)))))
        if edge[0]:
            side, which = ("smallest", "smaller") if not lower[0] else ("largest", "larger")
            row["note"] = f"argmin at the {side} N (no {which} measured size has a higher loss): dropped"
        else:
            row["used"] = True
        rows.append(row)
        rep_log_n.append(log_n_rep)
        curves.append(BudgetCurve(float(budget), g["n"].to_numpy(), np.exp(y), seeds, fine, interp[:, 0]))
    budgets = pd.DataFrame(rows)
    used = budgets["used"].to_numpy()
    if used.sum() < 2:
        detail = "; ".join(f"{r.flops:.3g}: {r.note or 'used'}" for r in budgets.itertuples())
        raise AnalysisError(f"isoflop: needs 2 or more budgets with an interior optimum, got {int(used.sum())} "
                            f"({detail}). Centre each budget's sizes on the expected N* and widen the grid")
    if used.sum() == 2:
        notes.append("only 2 budgets with an interior optimum: the exponent's interval is unreliable")
    dropped = budgets.loc[~budgets["used"]]
    for r in dropped.itertuples():
        notes.append(f"budget {r.flops:.3g} dropped: {r.note}")

    xc = np.log(budgets["flops"].to_numpy()[used])
    w = 1.0 / budgets["sigma_log_n"].to_numpy()[used] ** 2
    y_obs = np.log(budgets["n_star"].to_numpy()[used])
    y_rep = np.stack([rep_log_n[i] for i in np.flatnonzero(used)], axis=1)  # [R, budgets]
    slope, icpt = _wls(xc, np.vstack([y_obs, y_rep]), w)
    a = percentile_interval(slope[0], slope[1:], level)
    b = percentile_interval(1 - slope[0], 1 - slope[1:], level)
    return IsoflopFit(budgets, a, b, float(icpt[0]), np.column_stack([slope[1:], icpt[1:]]), noise, curves,
                      level, notes)


def _sides(x: np.ndarray, values: np.ndarray, x_star: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of `values` [sizes, K] (log-loss at sizes x): is some measured size below / above the argmin
    x_star [K] higher than the lowest measured loss? Both: the minimum is interior (bracketed by measurements)."""
    higher = values > values.min(axis=0)
    return ((x[:, None] < x_star) & higher).any(axis=0), ((x[:, None] > x_star) & higher).any(axis=0)


def _wls(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares line through every row of y [R, m] at x [m]: slopes and intercepts [R]."""
    w = w / w.sum()
    xm = (w * x).sum()
    ym = (y * w).sum(axis=1)
    slope = ((y - ym[:, None]) * (w * (x - xm))).sum(axis=1) / (w * (x - xm) ** 2).sum()
    return slope, ym - slope * xm
