"""Pooled compute multipliers: one joint fit of every label of an experiment, every run contributing.

Each row is one run's loss read at one budget C (log L, from `pooled_reads`). Per label l the isoFLOP curve is a
parabola in log N around the optimum, and its minimum follows a loss-vs-compute law:

    log L = log L*_l(C) + kappa_l (x - g_l - a_l c)^2,       x = log N - mean, c = log C - mean
    shared:       L*_l(C) = E + A (k_l C)^-alpha              k_ref = 1 (every label shares E, A, alpha)
    per-label:    L*_l(C) = E + A_l C^-alpha_l                (E shared)

Both are fitted by least squares on log L (Levenberg-Marquardt, batched over starts and bootstrap replicates).
Each frontier is parametrised by where it is and how it slopes at the centre of the data, not by (A, alpha):
F0 = log L*(u = 0) and s = -dlog L*/du at u = 0 (u = c, or c + log k_l), with E as the third parameter. Over the
fraction of a decade to a decade and a half a sweep spans, (E, A, alpha) lie on a curved valley of nearly equal
fit; in (E, F0, s) the valley runs along E alone, so the solver converges instead of crawling along it.
Under the per-label model the multiplier of l at C_ref is C_d / C_ref where dense reaches l's loss at C_ref:
L*_ref(C_d) = L*_l(C_ref). Both models also give the loss gap at C_ref, log L*_l(C_ref) - log L*_ref(C_ref): the
same comparison read off the losses instead of the compute axis. Near the data it stays as well determined as the
losses are, where a multiplier extrapolates along dense's frontier and, over a factor 4 of compute (a structure
search's first round), can have an interval spanning decades. The shared model is nested in the per-label one with
n_labels - 1 fewer parameters; the likelihood ratio LR = (RSS_shared - RSS_per_label) / var is compared with its
distribution under the shared fit.

Fixed-epoch protocol (`isoflop=False`, CBS's MLP comparison): every width trains the same number of epochs, so a
label's runs are points (C, L) along one loss-vs-compute curve, not isoFLOP parabolas. The parabola term is
dropped and log L = log L*_l(C) itself; k_l is then the pooled horizontal shift between the labels' curves.

Bootstrap (whole runs, seeds as the noise): a replicate keeps the design (sizes, budgets) and redraws every
run as another seed would: y* = fit + u_run + e_read, u ~ N(0, rho var), e ~ N(0, (1 - rho) var), so a run's
reads move together. var and rho (the correlation of two reads of one run) are moment estimates from the
per-label model's residuals that allow for what the fit absorbed (`noise_moments`), with the seed noise as a
floor of var when known. The bias-corrected percentile interval of each quantity over converged replicates is
reported; replicates that do not converge are dropped and counted. The LR statistic's null distribution comes
from the replicates drawn from the shared fit: p = (1 + #{LR* >= LR}) / (1 + B).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.stats import norm

from analysis.errors import AnalysisError
from analysis.fit.bootstrap import DEFAULT_LEVEL, DEFAULT_REPLICATES, Interval

MIN_BUDGETS_PER_LABEL = 3  # for a per-label exponent
SUPPORT_LEVEL = 0.05  # the shared model is supported unless the test rejects it at this level
_STARTS_E = (0.1, 0.5, 0.8, 0.95)  # E / (lowest loss) at the starts of the point fit
_STARTS_ALPHA = (0.1, 0.3, 1.0)
_MAX_ITER = 200
_E_MAX = 0.99  # E below 0.99 of the lowest loss
_TOL = 1e-7  # converged: a further step could lower the RSS by less than this fraction


@dataclass(frozen=True)
class PooledLabel:
    """One label under both models: the multiplier at C_ref (shared and per-label) and its per-label exponent."""

    label: str
    runs: int
    multiplier: Interval  # shared model: k_l
    multiplier_per_label: Interval  # per-label model: C_d / C_ref
    alpha_per_label: Interval
    loss_gap: Interval  # shared model: log L*_l(C_ref) - log L*_ref(C_ref)
    loss_gap_per_label: Interval  # the same under the per-label model

    def to_dict(self) -> dict:
        return {"runs": self.runs, "multiplier": self.multiplier.to_dict(),
                "multiplier_per_label": self.multiplier_per_label.to_dict(),
                "alpha_per_label": self.alpha_per_label.to_dict(), "loss_gap": self.loss_gap.to_dict(),
                "loss_gap_per_label": self.loss_gap_per_label.to_dict()}


@dataclass
class PooledFit:
    """The joint fit of one experiment: per-label multipliers at `reference_flops` under the supported model."""

    reference: str
    reference_flops: float
    labels: dict[str, PooledLabel]
    alpha: Interval  # shared exponent
    lr_statistic: float
    p_value: float
    model: str  # "shared" or "per-label": the one the data support
    sigma: float  # noise of log L the bootstrap draws and the LR statistic is scaled by
    correlation: float  # between two reads of one run
    replicates: int
    failed_replicates: dict[str, int]
    rows: int
    notes: list[str] = field(default_factory=list)
    protocol: str = "isoflop"  # or "fixed_epochs": points on each label's loss-vs-compute curve, no parabola
    # per model ("shared", "per-label") and label: (E, A, alpha) of L*(C) = E + A C^-alpha in absolute FLOPs
    curves: dict[str, dict[str, tuple[float, float, float]]] = field(default_factory=dict)

    def multiplier(self, label: str) -> Interval:
        """The multiplier of the supported model."""
        lab = self.labels[label]
        return lab.multiplier if self.model == "shared" else lab.multiplier_per_label

    def loss_gap(self, label: str) -> Interval:
        """log L*_label(C_ref) - log L*_reference(C_ref) of the supported model (negative: below the reference)."""
        lab = self.labels[label]
        return lab.loss_gap if self.model == "shared" else lab.loss_gap_per_label

    def to_dict(self) -> dict:
        return {"reference": self.reference, "reference_flops": self.reference_flops, "model": self.model,
                "alpha": self.alpha.to_dict(), "lr_statistic": self.lr_statistic, "p_value": self.p_value,
                "sigma": self.sigma, "correlation": self.correlation, "replicates": self.replicates,
                "failed_replicates": self.failed_replicates,
                "rows": self.rows, "labels": {k: v.to_dict() for k, v in self.labels.items()}, "notes": self.notes,
                "protocol": self.protocol,
                "curves": {m: {k: dict(zip(("E", "A", "alpha"), v)) for k, v in c.items()}
                           for m, c in self.curves.items()}}


class _Design:
    """Rows of the fit (label index, centred log N, centred log C) and both models' predictions with their
    Jacobians, batched over parameter vectors theta [R, p]."""

    def __init__(self, lab: np.ndarray, x: np.ndarray, c: np.ndarray, n_labels: int, lmin: float,
                 isoflop: bool = True):
        self.lab, self.x, self.c, self.L, self.lmin = lab, x, c, n_labels, lmin
        self.onehot = np.eye(n_labels)[lab]  # [n, L]
        self.P = 3 if isoflop else 0  # parabola parameters per label (none: points on the loss-vs-C curve)

    def _per(self, d: np.ndarray) -> np.ndarray:
        """Derivative d [R, n] of a per-label parameter, spread over its L columns [R, n, L]."""
        return d[:, :, None] * self.onehot

    def _parabola(self, th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """kappa_l z^2 with z = x - g_l - a_l c, and its Jacobian in (g_l, a_l, log kappa_l); zero without one."""
        L, lab = self.L, self.lab
        if not self.P:
            return np.zeros((len(th), self.lab.size)), np.zeros((len(th), self.lab.size, 0))
        g, a, kappa = th[:, :L][:, lab], th[:, L:2 * L][:, lab], np.exp(th[:, 2 * L:])[:, lab]
        z = self.x - g - a * self.c
        jac = [self._per(-2 * kappa * z), self._per(-2 * kappa * z * self.c), self._per(kappa * z * z)]
        return kappa * z * z, np.concatenate(jac, axis=2)

    def _frontier(self, th_e: np.ndarray, F0: np.ndarray, log_s: np.ndarray, u: np.ndarray):
        """log(E + A e^(-alpha u)) with E = lmin e, A = e^F0 - E, alpha = s e^F0 / A: value and its derivatives in
        (e, F0, log s, u)."""
        E, L0, s = self.lmin * th_e, np.exp(F0), np.exp(log_s)
        A = L0 - E
        alpha = s * L0 / A
        T = np.exp(-alpha * u)
        S = E + A * T
        d_e = self.lmin * (1 - T - alpha * u * T) / S
        d_F0 = T * (L0 + alpha * u * E) / S
        d_u = -alpha * A * T / S
        return np.log(S), d_e, d_F0, u * d_u, d_u

    def exponent(self, th_e: np.ndarray, F0: np.ndarray, log_s: np.ndarray) -> np.ndarray:
        """alpha of L* = E + A C^-alpha from (e, F0, log s)."""
        L0 = np.exp(F0)
        return np.exp(log_s) * L0 / (L0 - self.lmin * th_e)

    def log_A(self, th_e: np.ndarray, F0: np.ndarray, log_s: np.ndarray) -> np.ndarray:
        """log A at the centre of log C (u = 0), from (e, F0, log s)."""
        return np.log(np.exp(F0) - self.lmin * th_e)

    def shared(self, th: np.ndarray, jac: bool = False):
        """theta = [E / lmin, F0, log s, log k_1..k_{L-1}, g_l, a_l, log kappa_l]."""
        L = self.L
        logk = np.concatenate([np.zeros((len(th), 1)), th[:, 3:2 + L]], axis=1)
        u = self.c + logk[:, self.lab]
        f, d_e, d_F0, d_s, d_u = self._frontier(th[:, :1], th[:, 1:2], th[:, 2:3], u)
        par, d_par = self._parabola(th[:, 2 + L:])
        if not jac:
            return f + par
        d_k = self._per(d_u)[:, :, 1:]
        J = np.concatenate([d_e[..., None], d_F0[..., None], d_s[..., None], d_k, d_par], axis=2)
        return f + par, J

    def per_label(self, th: np.ndarray, jac: bool = False):
        """theta = [E / lmin, F0_l, log s_l, g_l, a_l, log kappa_l]."""
        L, lab = self.L, self.lab
        f, d_e, d_F0, d_s, _ = self._frontier(th[:, :1], th[:, 1:1 + L][:, lab], th[:, 1 + L:1 + 2 * L][:, lab],
                                              self.c)
        par, d_par = self._parabola(th[:, 1 + 2 * L:])
        if not jac:
            return f + par
        J = np.concatenate([d_e[..., None], self._per(d_F0), self._per(d_s), d_par], axis=2)
        return f + par, J


@np.errstate(all="ignore")  # a trial step may overflow; its RSS is then not finite and the step is refused
def _levenberg_marquardt(model, theta: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares of y [R, n] against model(theta [R, p]) for every row at once: (theta, rss, converged).

    theta[:, 0] = E / lmin is kept in [0, _E_MAX] (a step past a bound stops on it). Converged: the Gauss-Newton
    decrement g' (J'J)^-1 g (g = J' residual, without E when it sits on a bound and the gradient pushes it past),
    the most a further step could lower the RSS to second order, is below _TOL of the RSS.
    """
    theta = theta.copy()
    R, p = theta.shape
    lam = np.full(R, 1e-3)
    res = model(theta) - y
    rss = np.einsum("rn,rn->r", res, res)
    done, converged = ~np.isfinite(rss), np.zeros(R, bool)
    for _ in range(_MAX_ITER):
        act = np.flatnonzero(~done)
        if not act.size:
            break
        th, r0 = theta[act], res[act]
        J = model(th, jac=True)[1]
        push = np.einsum("rn,rn->r", J[:, :, 0], r0)  # > 0: descent lowers E
        pinned = ((th[:, 0] <= 0) & (push > 0)) | ((th[:, 0] >= _E_MAX) & (push < 0))
        J[pinned, :, 0] = 0
        Jt = J.transpose(0, 2, 1)
        JtJ, g = Jt @ J, (Jt @ r0[..., None])[..., 0]
        diag = np.einsum("rpp->rp", JtJ)
        scale = np.maximum(diag, 1e-8 * diag.max(axis=1, keepdims=True) + 1e-300)[:, None, :] * np.eye(p)
        decrement = np.einsum("rp,rp->r", g, np.linalg.solve(JtJ + 1e-6 * scale, g[..., None])[..., 0])
        ok = decrement < _TOL * rss[act]
        converged[act[ok]] = done[act[ok]] = True
        step = -np.linalg.solve(JtJ + lam[act, None, None] * scale, g[..., None])[..., 0]
        new = th + step
        new[:, 0] = np.clip(new[:, 0], 0, _E_MAX)
        new_res = model(new) - y[act]
        new_rss = np.einsum("rn,rn->r", new_res, new_res)
        better = ~ok & np.isfinite(new_rss) & (new_rss <= rss[act])
        up = act[better]
        theta[up], res[up], rss[up] = new[better], new_res[better], new_rss[better]
        lam[act] = np.where(better, lam[act] / 10, lam[act] * 4)
        done[act[lam[act] > 1e10]] = True
    return theta, rss, converged


def _parabola_starts(y: np.ndarray, d: _Design) -> np.ndarray:
    """Per label (g, a, log kappa) from a linear least-squares quadratic in (x, c): the vertex of x."""
    out = np.zeros((d.P, d.L))
    if not d.P:
        return out
    for lab in range(d.L):
        m = d.lab == lab
        x, c = d.x[m], d.c[m]
        X = np.column_stack([np.ones_like(x), c, x, x * x, x * c, c * c])
        beta = np.linalg.lstsq(X, y[m], rcond=None)[0]
        kappa = beta[3] if beta[3] > 1e-4 else 1e-2
        out[:, lab] = (-beta[2] / (2 * kappa), -beta[4] / (2 * kappa), np.log(kappa))
    return out


def _point(d: _Design, y: np.ndarray, shared: bool) -> tuple[np.ndarray, float]:
    """The best of a grid of starts (E, alpha) for one model."""
    par = _parabola_starts(y, d)
    L, mean_loss = d.L, float(np.exp(y).mean())
    starts = []
    for fe in _STARTS_E:
        for alpha in _STARTS_ALPHA:
            A = max(mean_loss - fe * d.lmin, 1e-3 * mean_loss)
            F0, log_s = np.log(fe * d.lmin + A), np.log(alpha * A / (fe * d.lmin + A))
            if shared:
                head = [fe, F0, log_s] + [0.0] * (L - 1)
            else:
                head = [fe] + [F0] * L + [log_s] * L
            starts.append(np.concatenate([head, par.ravel()]))
    theta0 = np.array(starts)
    model = d.shared if shared else d.per_label
    theta, rss, _ = _levenberg_marquardt(model, theta0, np.broadcast_to(y, (len(theta0), y.size)))
    best = int(np.nanargmin(np.where(np.isfinite(rss), rss, np.inf)))
    return theta[best], float(rss[best])


def noise_moments(J: np.ndarray, resid: np.ndarray, run: np.ndarray) -> tuple[float, float]:
    """(var, rho) of the noise of log L, Sigma = var ((1 - rho) I + rho B) with B_ij = 1 when reads i and j belong
    to one run, unbiased by moments of the linearised fit's residuals e = M y (M = I - J (J'J)^+ J'):

        E[e'e]         = a tr(M) + b tr(M B)                      a = var (1 - rho), b = var rho
        E[e'(B - I)e]  = a tr((B - I) M) + b tr((B - I) M B M)
    """
    M = np.eye(len(resid)) - J @ np.linalg.pinv(J.T @ J, hermitian=True) @ J.T
    B = (run[:, None] == run[None, :]).astype(float)
    C = B - np.eye(len(resid))
    if not C.any():  # one read per run (the fixed-epoch protocol): no correlation to measure
        return float(resid @ resid / max(np.trace(M), 1e-12)), 0.0
    MB = M @ B
    lhs = np.array([[np.trace(M), np.trace(MB)], [np.trace(C @ M), np.sum(C * (MB @ M).T)]])
    rhs = np.array([resid @ resid, resid @ C @ resid])
    a, b = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    a, b = max(a, 0.0), max(b, 0.0)
    if a + b <= 0:
        return float(resid @ resid / len(resid)), 0.0
    return float(a + b), float(min(b / (a + b), 0.99))


def _simulate(fitted: np.ndarray, run: np.ndarray, var: float, rho: float, rng: np.random.Generator,
              replicates: int) -> np.ndarray:
    """Replicates y* = fitted + a run's offset + a read's own noise, var (1 - rho) + var rho = var in all."""
    offset = rng.normal(0, np.sqrt(var * rho), (replicates, run.max() + 1))[:, run]
    return fitted + offset + rng.normal(0, np.sqrt(var * (1 - rho)), (replicates, fitted.size))


def bias_corrected_interval(value: float, samples: np.ndarray, level: float = DEFAULT_LEVEL) -> Interval:
    """Efron's bias-corrected percentile interval: with z0 = Phi^-1(share of replicates below the point), the
    percentiles Phi(2 z0 -+ z) instead of Phi(-+z); z0 = 0 gives the plain percentile interval. A percentile
    interval of an estimator biased by b is centred about 2b off; this one is not."""
    finite = np.asarray(samples, float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return Interval(float(value), float("nan"), float("nan"), level)
    below = (np.sum(finite < value) + 0.5 * np.sum(finite == value)) / finite.size
    z0 = norm.ppf(np.clip(below, 0.5 / finite.size, 1 - 0.5 / finite.size))
    z = norm.ppf((1 + level) / 2)
    lo, hi = np.percentile(finite, 100 * norm.cdf([2 * z0 - z, 2 * z0 + z]))
    return Interval(float(value), float(lo), float(hi), level)


@np.errstate(all="ignore")  # unconverged replicates may hold invalid parameters; they are dropped afterwards
def _per_label_exponents(d: _Design, th: np.ndarray) -> np.ndarray:
    """alpha_l [R, L] of the per-label model."""
    L = d.L
    return d.exponent(th[:, :1], th[:, 1:1 + L], th[:, 1 + L:1 + 2 * L])


@np.errstate(all="ignore")
def _alt_multiplier(d: _Design, th: np.ndarray, c_ref: float) -> np.ndarray:
    """log(C_d / C_ref) per label [R, L]: dense (label 0) reaches label l's L*(C_ref) at C_d."""
    L = d.L
    logA, alpha = d.log_A(th[:, :1], th[:, 1:1 + L], th[:, 1 + L:1 + 2 * L]), _per_label_exponents(d, th)
    c_d = (logA[:, :1] - logA + alpha * c_ref) / alpha[:, :1]
    return c_d - c_ref


@np.errstate(all="ignore")
def _gaps(d: _Design, th: np.ndarray, c_ref: float, shared: bool) -> np.ndarray:
    """log L*_l(C_ref) - log L*_ref(C_ref) per label [R, L], under the shared or the per-label model."""
    L = d.L
    if shared:
        logk = np.concatenate([np.zeros((len(th), 1)), th[:, 3:2 + L]], axis=1)
        f = d._frontier(th[:, :1], th[:, 1:2], th[:, 2:3], c_ref + logk)[0]
    else:
        f = d._frontier(th[:, :1], th[:, 1:1 + L], th[:, 1 + L:1 + 2 * L], np.full((len(th), L), c_ref))[0]
    return f - f[:, :1]


def _curves(d: _Design, th0: np.ndarray, th1: np.ndarray, c0: float,
            labels: list[str]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """(E, A, alpha) per label of both models' L*(C) = E + A C^-alpha, C in FLOPs (not centred)."""
    L = d.L
    E0, F0, log_s = d.lmin * th0[0], th0[1], th0[2]
    alpha0, A0 = float(d.exponent(th0[:1], F0, log_s)[0]), float(np.exp(F0) - E0)
    logk = np.concatenate([[0.0], th0[3:2 + L]])
    E1 = d.lmin * th1[0]
    alpha1 = d.exponent(th1[:1], th1[1:1 + L], th1[1 + L:1 + 2 * L])
    A1 = np.exp(th1[1:1 + L]) - E1
    return {"shared": {lab: (float(E0), float(A0 * np.exp(alpha0 * (c0 - logk[i]))), alpha0)
                       for i, lab in enumerate(labels)},
            "per-label": {lab: (float(E1), float(A1[i] * np.exp(alpha1[i] * c0)), float(alpha1[i]))
                          for i, lab in enumerate(labels)}}


def fit_pooled(reads: pd.DataFrame, reference: str | None = None, reference_flops: float | None = None,
               sigma: float | None = None, replicates: int = DEFAULT_REPLICATES, seed: int = 0,
               level: float = DEFAULT_LEVEL, isoflop: bool = True) -> PooledFit:
    """Joint fit of `reads` (label, run_id, flops, n, loss): both models, intervals, and the test between them.

    `reference` (default: the first label) has multiplier 1; multipliers are reported at `reference_flops`
    (default: the reference's largest budget). `sigma` is the seed noise of log L: the floor of the noise the
    bootstrap draws (default: none, the per-label model's residual standard deviation alone). `isoflop=False`
    fits the fixed-epoch protocol: each read is a point on its label's loss-vs-compute curve (no parabola in N).
    """
    labels = list(dict.fromkeys(reads["label"]))
    reference = reference if reference is not None else labels[0]
    if reference not in labels:
        raise AnalysisError(f"reference label {reference!r} has no runs; the labels are {labels}")
    if len(labels) < 2:
        raise AnalysisError("a pooled fit compares labels and needs at least 2; got "
                            f"{labels}")
    labels = [reference] + [lab for lab in labels if lab != reference]
    L = len(labels)
    p_alt = 1 + 2 * L + (3 if isoflop else 0) * L  # parameters of the per-label model
    if len(reads) <= p_alt:
        raise AnalysisError(f"a pooled fit of {L} labels has {p_alt} parameters and needs more reads; got "
                            f"{len(reads)}. Add runs or budgets")
    if reads["flops"].nunique() < 2:
        what = "budgets" if isoflop else "compute values (widths)"
        raise AnalysisError(f"a pooled fit needs reads at 2 or more {what} (the loss-vs-compute slope sets the "
                            f"multipliers); all {len(reads)} are at C = {reads['flops'].iloc[0]:.3g}")
    lab = reads["label"].map({k: i for i, k in enumerate(labels)}).to_numpy()
    log_c, log_n = np.log(reads["flops"].to_numpy(float)), np.log(reads["n"].to_numpy(float))
    c0, x0 = log_c.mean(), log_n.mean()
    y = np.log(reads["loss"].to_numpy(float))
    run = pd.factorize(reads["run_id"])[0]
    d = _Design(lab, log_n - x0, log_c - c0, L, float(np.exp(y).min()), isoflop)
    if reference_flops is None:
        reference_flops = float(reads.loc[reads["label"] == reference, "flops"].max())
    c_ref = np.log(reference_flops) - c0

    th0, rss0 = _point(d, y, shared=True)
    th1, rss1 = _point(d, y, shared=False)
    rss1 = min(rss1, rss0)  # nested: the per-label model is never worse than the shared one
    n = y.size
    fit0, fit1 = d.shared(th0[None])[0], d.per_label(th1[None])[0]
    var, rho = noise_moments(d.per_label(th1[None], jac=True)[1][0], y - fit1, run)
    var = max(var, float(sigma) ** 2) if sigma is not None else var  # the seed noise, when known, is a floor
    sigma = float(np.sqrt(var))
    lr = (rss0 - rss1) / var

    rng = np.random.default_rng(seed)
    y_null = _simulate(fit0, run, var, rho, rng, replicates)
    y_alt = _simulate(fit1, run, var, rho, rng, replicates)
    b0, r0, ok0 = _levenberg_marquardt(d.shared, np.repeat(th0[None], replicates, 0), y_null)
    b1n, r1n, ok1n = _levenberg_marquardt(d.per_label, np.repeat(th1[None], replicates, 0), y_null)
    b1, _, ok1 = _levenberg_marquardt(d.per_label, np.repeat(th1[None], replicates, 0), y_alt)
    null_ok = ok0 & ok1n
    lr_null = (r0[null_ok] - np.minimum(r1n[null_ok], r0[null_ok])) / var
    p_value = float((1 + np.sum(lr_null >= lr - 1e-12)) / (1 + lr_null.size))

    logk_pt = np.concatenate([[0.0], th0[3:3 + L - 1]])
    logk_bs = np.concatenate([np.zeros((replicates, 1)), b0[:, 3:3 + L - 1]], axis=1)[ok0]
    alt_pt, b_alt_mult = _alt_multiplier(d, th1[None], c_ref)[0], _alt_multiplier(d, b1, c_ref)
    alpha_alt_pt, b_alpha_alt = _per_label_exponents(d, th1[None])[0], _per_label_exponents(d, b1)
    gap_pt, b_gap = _gaps(d, th0[None], c_ref, shared=True)[0], _gaps(d, b0[ok0], c_ref, shared=True)
    gap_alt_pt, b_gap_alt = _gaps(d, th1[None], c_ref, shared=False)[0], _gaps(d, b1, c_ref, shared=False)
    runs_per_label = reads.groupby("label")["run_id"].nunique()
    budgets = reads.groupby("label")["flops"].nunique()
    # with 2 budgets a label's E, A_l, alpha_l are not all determined: its per-label numbers get no interval
    thin = [lab for lab in labels if budgets[lab] < MIN_BUDGETS_PER_LABEL]
    out = {}
    with np.errstate(over="ignore"):  # a replicate that never reaches dense's loss has multiplier inf: no warning
        for i, name in enumerate(labels):
            own = ok1 & (name not in thin)
            out[name] = PooledLabel(
                name, int(runs_per_label[name]),
                replace(bias_corrected_interval(float(np.exp(logk_pt[i])), np.exp(logk_bs[:, i]), level),
                        dropped=float(1 - ok0.mean())),
                replace(bias_corrected_interval(float(np.exp(alt_pt[i])),
                                                np.exp(b_alt_mult[own & (reference not in thin), i]), level),
                        dropped=float(1 - ok1.mean())),
                bias_corrected_interval(float(alpha_alt_pt[i]), b_alpha_alt[own, i], level),
                replace(bias_corrected_interval(float(gap_pt[i]), b_gap[:, i], level), dropped=float(1 - ok0.mean())),
                replace(bias_corrected_interval(float(gap_alt_pt[i]), b_gap_alt[ok1, i], level),
                        dropped=float(1 - ok1.mean())))
    failed = {"shared": int((~ok0).sum()), "per-label": int((~ok1).sum()), "null per-label": int((~ok1n).sum())}
    notes = [f"{v} of {replicates} {k} bootstrap replicates did not converge and were dropped"
             for k, v in failed.items() if v]
    if thin:
        notes.append(f"{', '.join(thin)}: fewer than {MIN_BUDGETS_PER_LABEL} budgets, so the per-label model "
                     "cannot pin their exponent: no interval for it (nor for the per-label multiplier)")
    model = "per-label" if p_value < SUPPORT_LEVEL else "shared"
    shared_alpha = d.exponent(th0[None, :1], th0[None, 1:2], th0[None, 2:3])[0, 0]
    alpha = bias_corrected_interval(float(shared_alpha), d.exponent(b0[ok0, :1], b0[ok0, 1:2], b0[ok0, 2:3])[:, 0],
                                    level)
    return PooledFit(reference, float(reference_flops), out, alpha, float(lr), p_value, model, sigma, rho,
                     replicates, failed, n, notes, "isoflop" if isoflop else "fixed_epochs",
                     _curves(d, th0, th1, c0, labels))
