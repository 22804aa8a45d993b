"""Huber-loss nonlinear least squares on log-loss: a multi-start point fit and a batched bootstrap refit.

Every law here is fitted on log L, so a model maps parameters theta [R, p] and design arrays (broadcastable
to [R, n]) to predictions of log L [R, n] and, when asked (jac=True), their Jacobian [R, n, p]. The objective
of one fit is the weighted mean Huber loss of the residuals r = prediction - log L:

    h(r) = r^2 / 2                  if |r| <= delta
           delta * (|r| - delta/2)  otherwise,       objective = sum_i w_i h(r_i) / sum_i w_i

(a mean, not a sum, so its scale does not depend on the number of points; delta = 1e-3 as in Chinchilla).

The point fit screens a grid of initialisations and runs L-BFGS-B from the best few (or, for the cheap
3-parameter frontier, the batched solver from the best sixteen at once). Bootstrap replicates are the same
problem with other weights (or data), so they are refitted together by a vectorised, damped semismooth
Newton iteration warm-started at the point fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

HUBER_DELTA = 1e-3

Model = Callable[..., tuple[np.ndarray, np.ndarray]]


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(r)
    m = np.minimum(a, delta)
    return m * (a - 0.5 * m)  # a^2/2 when a <= delta, delta (a - delta/2) beyond


def _irls_weights(r: np.ndarray, delta: float) -> np.ndarray:
    """psi(r) / r: 1 inside the quadratic zone, delta / |r| outside (the Huber IRLS weight)."""
    return delta / np.maximum(np.abs(r), delta)


def _take(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows `idx` of a batch array; a shared [1, ...] array is returned unchanged."""
    return a if a.shape[0] == 1 else a[idx]


@dataclass(frozen=True)
class Problem:
    """One robust regression: log-loss targets y, weights w and design arrays, all [R or 1, n]."""

    model: Model
    y: np.ndarray
    w: np.ndarray
    design: tuple[np.ndarray, ...]
    lower: np.ndarray
    upper: np.ndarray
    delta: float = HUBER_DELTA

    def subset(self, idx: np.ndarray) -> "Problem":
        return Problem(self.model, _take(self.y, idx), _take(self.w, idx),
                       tuple(_take(d, idx) for d in self.design), self.lower, self.upper, self.delta)

    def objective(self, theta: np.ndarray) -> np.ndarray:
        pred, _ = self.model(theta, *self.design, jac=False)
        return self.mean_huber(pred)

    def mean_huber(self, pred: np.ndarray) -> np.ndarray:
        return (self.w * huber(pred - self.y, self.delta)).sum(-1) / self.w.sum(-1)


def _as_rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return a[None, :] if a.ndim == 1 else a


def make_problem(model: Model, y: np.ndarray, design: Sequence[np.ndarray], bounds: Sequence[tuple[float, float]],
                 w: np.ndarray | None = None, delta: float = HUBER_DELTA) -> Problem:
    y = _as_rows(y)
    w = np.ones_like(y) if w is None else _as_rows(w)
    lower = np.array([b[0] for b in bounds], dtype=float)
    upper = np.array([b[1] for b in bounds], dtype=float)
    return Problem(model, y, w, tuple(_as_rows(d) for d in design), lower, upper, delta)


def at_bounds(theta: np.ndarray, bounds: Sequence[tuple[float, float]], names: Sequence[str],
              rtol: float = 1e-6) -> list[str]:
    """`name at its lower/upper bound` for every parameter of a point fit sitting on a bound."""
    out = []
    for value, (lo, hi), name in zip(theta, bounds, names):
        tol = rtol * max(1.0, abs(hi - lo))
        for bound, side in ((lo, "lower"), (hi, "upper")):
            if abs(value - bound) <= tol:
                out.append(f"{name} at its {side} bound")
    return out


def _best_starts(problem: Problem, grid: np.ndarray, top: int) -> np.ndarray:
    """The `top` grid points with the lowest objective (a cheap vectorised screen)."""
    grid = np.clip(grid, problem.lower, problem.upper)
    fvals = problem.objective(grid)
    return grid[np.argsort(np.where(np.isfinite(fvals), fvals, np.inf))[:top]]


def fit_multistart(problem: Problem, grid: np.ndarray, top: int = 4) -> tuple[np.ndarray, float]:
    """Best of L-BFGS-B runs started from the `top` best grid points, polished by the batched solver."""
    bounds = list(zip(problem.lower, problem.upper))
    w = problem.w[0] / problem.w[0].sum()

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        pred, jac = problem.model(theta[None, :], *problem.design)
        r = pred[0] - problem.y[0]
        psi = np.clip(r, -problem.delta, problem.delta)
        # Scaled by 1/delta so the objective is O(|r|) and L-BFGS-B's tolerances are meaningful.
        return float((w * huber(r, problem.delta)).sum() / problem.delta), (jac[0].T @ (w * psi)) / problem.delta

    best_theta, best_f = None, np.inf
    with threadpool_limits(1, user_api="blas"):  # threaded BLAS only adds contention for 5x5 problems
        for x0 in _best_starts(problem, grid, top):
            res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                           options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12})
            if best_theta is None or (np.isfinite(res.fun) and res.fun < best_f):
                best_theta, best_f = res.x, float(res.fun)
    # Polish with the batched solver (same objective) so point fit and replicates share one optimum notion.
    polished, fpol = solve_batched(problem, best_theta[None, :])
    return polished[0], float(fpol[0])


def fit_multistart_batched(problem: Problem, grid: np.ndarray, top: int = 16) -> tuple[np.ndarray, float]:
    """Best of the batched solver run from the `top` best grid points at once (all starts in one solve)."""
    starts = _best_starts(problem, grid, top)
    shared = Problem(problem.model, problem.y, np.repeat(problem.w, len(starts), axis=0), problem.design,
                     problem.lower, problem.upper, problem.delta)
    theta, fval = solve_batched(shared, starts)
    best = int(np.nanargmin(np.where(np.isfinite(fval), fval, np.nan)))
    return theta[best], float(fval[best])


def solve_batched(problem: Problem, theta0: np.ndarray, max_iter: int = 300, rtol: float = 1e-9
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Minimise every replicate's objective at once; returns theta [R, p] and objectives [R].

    A damped semismooth Newton iteration: the Huber objective is piecewise quadratic, its gradient J' w psi(r)
    and its generalised Hessian J' diag(w [|r| <= delta]) J. Each step solves

        (J' diag(w [|r| <= delta]) J + lam * diag(J' diag(w psi(r)/r) J)) step = -J' w psi(r),

    damping with the IRLS curvature so that steps stay defined while few residuals sit in the quadratic zone;
    a parameter at a bound that the gradient pushes outward is held there (active set).
    A step is kept where the objective decreased (then lam /= 3), else lam grows x 4; a replicate stops once
    a kept step improves its objective by less than `rtol` (relative) or lam exceeds 1e10.
    """
    n_rep = max(theta0.shape[0], problem.w.shape[0], problem.y.shape[0])
    theta = np.clip(np.broadcast_to(theta0, (n_rep, theta0.shape[-1])).copy(), problem.lower, problem.upper)
    pred, jac = problem.model(theta, *problem.design)  # kept for every replicate at its current theta
    pred = np.broadcast_to(pred, (n_rep,) + pred.shape[1:]).copy()
    jac = np.broadcast_to(jac, (n_rep,) + jac.shape[1:]).copy()
    fval = problem.mean_huber(pred)
    lam = np.full(n_rep, 1e-3)
    active = np.ones(n_rep, dtype=bool)
    eye = np.eye(theta.shape[1])
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        sub = problem.subset(idx)
        th, jac_i = theta[idx], jac[idx]
        r = pred[idx] - sub.y
        jac_t = jac_i.transpose(0, 2, 1)
        quadratic = np.matmul(jac_t * (sub.w * (np.abs(r) <= sub.delta))[:, None, :], jac_i)
        irls_diag = np.einsum("rnp,rn->rp", jac_i * jac_i, sub.w * _irls_weights(r, sub.delta))
        grad = np.matmul(jac_t, (sub.w * np.clip(r, -sub.delta, sub.delta))[..., None])[..., 0]
        system = quadratic + (lam[idx, None] * np.maximum(irls_diag, 1e-12))[:, :, None] * eye + 1e-12 * eye
        # Active set: a parameter at a bound that the gradient pushes outward stays there this step.
        blocked = ((th <= sub.lower) & (grad > 0)) | ((th >= sub.upper) & (grad < 0))
        free = ~blocked
        system = system * (free[:, :, None] & free[:, None, :]) + blocked[:, :, None] * eye
        grad = np.where(blocked, 0.0, grad)
        step = np.linalg.solve(system, -grad[..., None])[..., 0]
        trial = np.clip(th + step, sub.lower, sub.upper)
        pred_t, jac_t = sub.model(trial, *sub.design)
        f_trial = sub.mean_huber(pred_t)
        better = np.isfinite(f_trial) & (f_trial < fval[idx])
        gain = np.where(better, fval[idx] - f_trial, 0.0)
        kept = idx[better]
        theta[kept], fval[kept], pred[kept], jac[kept] = trial[better], f_trial[better], pred_t[better], jac_t[better]
        lam[idx] = np.where(better, np.maximum(lam[idx] / 3, 1e-12), lam[idx] * 4)
        done = (better & (gain <= rtol * np.abs(fval[idx]))) | (lam[idx] > 1e10)
        active[idx[done]] = False
    return theta, fval
