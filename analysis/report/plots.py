"""Figures of the report, drawn on matplotlib's object API with the Agg canvas (no pyplot, no display).

Each function draws one figure and saves it as PNG and PDF under the given stem; it returns the PNG path.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib import colormaps, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from analysis.fit.bootstrap import Interval
from analysis.fit.compare import compute_multiplier
from analysis.fit.frontier import FrontierFit
from analysis.fit.isoflop import IsoflopFit

DPI = 150
STYLE = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9}


def _styled(fn):
    """Draw under the report's font sizes without touching matplotlib's global settings."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


def _figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.4) -> tuple[Figure, np.ndarray]:
    """A figure with a grid of axes; grids use fixed spacing (constrained layout is slow on many panels)."""
    grid = ncols * nrows > 1
    fig = Figure(figsize=(width * ncols, height * nrows), layout=None if grid else "constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    if grid:
        h = height * nrows
        fig.subplots_adjust(left=1.1 / (width * ncols), right=1 - 1.4 / (width * ncols), bottom=0.7 / h,
                            top=1 - 0.9 / h, wspace=0.3, hspace=0.55)
    return fig, axes


def short_number(v: float) -> str:
    """Tick text: 2.55, 350, 1.6M, 30T (SI suffixes from a thousand up)."""
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def _log_axes(ax) -> None:
    """Log-log axes without minor ticks (they dominate drawing time); a narrow axis gets plain-number ticks."""
    ax.set(xscale="log", yscale="log")
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        axis.set_minor_locator(NullLocator())
        if lo > 0 and hi / lo < 30:  # 1-2-5 steps (1-1.5-2-3-5-7 on a very narrow axis), even on the log scale
            decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
            for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7)):
                ticks = [m * 10.0 ** k for k in decades for m in mantissas if lo <= m * 10.0 ** k <= hi]
                if len(ticks) >= 3:
                    break
            if len(ticks) < 2:
                ticks = [t for t in MaxNLocator(4).tick_values(lo, hi) if lo <= t <= hi and t > 0]
            axis.set_major_locator(FixedLocator(ticks))
            axis.set_major_formatter(FuncFormatter(lambda v, _: short_number(v)))


def _save(fig: Figure, stem: Path) -> Path:
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(stem.with_suffix(".png"), dpi=DPI)
    fig.savefig(stem.with_suffix(".pdf"))
    return stem.with_suffix(".png")


def _line_style(i: int) -> str:
    """Solid for the first ten structures, then dashed, then dotted, so colours never repeat with one style."""
    return ("-", "--", ":")[i // 10 % 3]


def _colours(labels: list[str]) -> dict[str, tuple]:
    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def _fit_band(ax, fit: FrontierFit, c: np.ndarray, col, label: str | None, ls: str = "-",
              clip: tuple[float, float] | None = None) -> None:
    band = np.nanpercentile(fit.replicate_predictions(c), [2.5, 97.5], axis=0)
    if clip is not None:  # intervals clipped to the informative range, so a wild replicate cannot set the axes
        band = np.clip(band, *clip)
    ax.fill_between(c, band[0], band[1], color=col, alpha=0.2, lw=0)
    ax.plot(c, fit.predict(c), color=col, lw=1.8, ls=ls, label=label)


AXIS = {"FLOPs": "training compute C (FLOPs)", "seconds": "training time (s)"}


LOSS_NAMES = {"val_loss": "validation loss", "train_loss": "final training loss"}  # per --metric


def loss_unit(family: str | None) -> str:
    """What a loss is measured per: a token for language models, an example (an image) otherwise."""
    return "nats/token" if family in (None, "gpt2") else "nats/example"


def _fit_note(label: str, status: str | None) -> str:
    """A legend or title suffix that marks a weak or failed fit (ok fits get none)."""
    return f" ({status})" if status in ("weak", "failed") else ""


def _log_ticks(axis, lo: float, hi: float, must: tuple[float, ...] = ()) -> None:
    """Plain-number ticks on a log axis over [lo, hi], always including `must` (e.g. parity at 1)."""
    ticks = sorted({*(t for t in (0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 20, 30, 50, 100)
                      if lo <= t <= hi), *must})
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: short_number(v)))


def _loss_range(losses: np.ndarray) -> tuple[float, float]:
    """y-range around the given losses with a margin (log-symmetric)."""
    lo, hi = float(np.nanmin(losses)), float(np.nanmax(losses))
    pad = max((hi / lo) ** 0.08, 1.02)
    return lo / pad, hi * pad


@_styled
def frontiers(fits: Mapping[str, FrontierFit], failed: set[str], kind: str, title: str, stem: Path,
              weak: frozenset[str] = frozenset(), unit: str = "nats/token", loss: str = "validation loss") -> Path:
    """Every label's envelope (dots) and fitted L(C) with its band, `(weak)` in its legend entry when weak; a
    failed fit is drawn grey without a curve."""
    fig, (ax,) = _figure(width=8.0, height=5.0)
    colours = _colours(list(fits))
    envs = np.concatenate([f.envelope["loss"].to_numpy(float) for f in fits.values()])
    clip = _loss_range(envs)
    for i, (label, fit) in enumerate(fits.items()):
        env = fit.envelope
        if label in failed:
            ax.scatter(env["flops"], env["loss"], color="0.65", s=12, zorder=2, label=f"{label}: fit failed")
            continue
        ax.scatter(env["flops"], env["loss"], color=colours[label], s=14, zorder=3, edgecolor="white", linewidth=0.3)
        c = np.geomspace(env["flops"].min(), env["flops"].max(), 60)
        note = _fit_note(label, "weak" if label in weak else None)
        _fit_band(ax, fit, c, colours[label], f"{label}: alpha = {fit.params['alpha'].fmt('.3f')}{note}",
                  ls=_line_style(i), clip=clip)
    ax.set_ylim(*clip)
    _log_axes(ax)
    ax.set(xlabel=AXIS[kind], ylabel=f"{loss} ({unit}, envelope)",
           title=f"{title}\nloss frontiers L = E + A x^-alpha against {AXIS[kind]}")
    ax.grid(True, alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, stem)


@_styled
def loss_curves(curves: Mapping[str, pd.DataFrame], fits: Mapping[str, FrontierFit], failed: set[str],
                widths: Mapping[str, float], dense: str | None, kind: str, title: str, stem: Path,
                weak: frozenset[str] = frozenset(), unit: str = "nats/token", loss: str = "validation loss") -> Path:
    """One panel per label on shared axes: every run's curve coloured by width, the envelope and the fit.

    The y-range covers the runs' final losses and the envelopes, so the first evaluations (near the initial
    loss) leave the top of the axes instead of setting its range; the x-range starts where curves enter it.
    """
    labels = [lab for lab in curves if len(curves[lab])]
    ncols = min(3, len(labels))
    nrows = int(np.ceil(len(labels) / ncols))
    fig = Figure(figsize=(3.8 * ncols + 1.2, 3.2 * nrows + 0.9))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)).ravel()
    fig.subplots_adjust(left=0.75 / (3.8 * ncols + 1.2), right=1 - 1.3 / (3.8 * ncols + 1.2),
                        bottom=0.65 / (3.2 * nrows + 0.9), top=1 - 0.75 / (3.2 * nrows + 0.9), wspace=0.08,
                        hspace=0.3)
    every = pd.concat([curves[lab] for lab in labels])
    finals = every.loc[every.groupby("run_id")["flops"].idxmax(), "loss"].to_numpy(float)
    envs = [fits[lab].envelope["loss"].to_numpy(float) for lab in labels if lab in fits]
    clip = _loss_range(np.concatenate([finals, *envs]))
    w = np.array([float(widths[r]) for r in every["run_id"].unique() if r in widths and widths[r] is not None])
    norm = LogNorm(w.min(), w.max() * 1.001) if w.size else LogNorm(1, 2)
    cmap = colormaps["viridis"]
    ref = fits.get(dense) if dense and dense not in failed else None
    for ax, label in zip(axes, labels):
        cv = curves[label].sort_values(["run_id", "flops"])
        groups = list(cv.groupby("run_id", sort=False))
        segments = [np.column_stack([g["flops"], g["loss"]]) for _, g in groups]
        cols = [cmap(norm(float(widths.get(rid) or norm.vmin))) for rid, _ in groups]
        ax.add_collection(LineCollection(segments, colors=cols, alpha=0.8, linewidths=1.0))
        ax.autoscale_view()
        fit = fits.get(label)
        state = "not fitted" if fit is None else ("fit failed" if label in failed else
                                                   f"alpha = {fit.params['alpha'].fmt('.3f')}"
                                                   + _fit_note(label, "weak" if label in weak else None))
        if fit is not None and label not in failed:
            env = fit.envelope
            ax.scatter(env["flops"], env["loss"], color="black", s=8, zorder=3)
            c = np.geomspace(env["flops"].min(), env["flops"].max(), 60)
            _fit_band(ax, fit, c, "crimson", None, clip=clip)
            if ref is not None and label != dense:
                ax.plot(c, ref.predict(c), color="black", lw=1, ls="--")
        ax.set_title(f"{label}: {state}")
        ax.grid(True, alpha=0.2)
    axes[0].set_ylim(*clip)
    shown = every.loc[every["loss"] <= clip[1], "flops"]
    axes[0].set_xlim((shown if len(shown) else every["flops"]).min() / 1.3, every["flops"].max() * 1.3)
    for ax in axes[:len(labels)]:
        _log_axes(ax)
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    bar = fig.colorbar(ScalarMappable(norm, cmap), ax=list(axes[:len(labels)]), label="width", fraction=0.02,
                       pad=0.02, shrink=min(0.9, 2.2 / nrows), aspect=20)
    if 0 < np.unique(w).size <= 10:  # the widths the runs have, as plain numbers
        bar.set_ticks(np.unique(w), labels=[f"{v:g}" for v in np.unique(w)])
        bar.ax.minorticks_off()
    fig.supxlabel(AXIS[kind])
    fig.supylabel(f"{loss} ({unit})")
    extra = f", dashed: {dense}'s fit" if ref is not None else ""
    fig.suptitle(f"{title}: runs coloured by width, dots: envelope, red: fit with its band{extra}")
    return _save(fig, stem)


@_styled
def fixed_epoch_curves(points: pd.DataFrame, curves: Mapping[str, tuple[float, float, float]],
                       multipliers: Mapping[str, Interval], model: str, title: str, stem: Path,
                       unit: str = "nats/example", loss: str = "final training loss") -> Path:
    """The fixed-epoch protocol: every run (points: label, flops, loss) with its label's seed mean per width
    (larger markers), and the pooled fit's curve L = E + A C^-alpha per label under the supported `model`, each
    legend entry with the label's multiplier."""
    fig, (ax,) = _figure(width=8.0, height=5.0)
    labels = list(dict.fromkeys(points["label"]))
    colours = _colours(labels)
    for i, label in enumerate(labels):
        mine = points[points["label"] == label]
        col = colours[label]
        ax.scatter(mine["flops"], mine["loss"], color=col, s=10, alpha=0.5, zorder=2)
        mean = mine.groupby("flops")["loss"].mean()
        ax.scatter(mean.index, mean.to_numpy(), color=col, s=30, zorder=3, edgecolor="white", linewidth=0.4)
        if label in curves:
            E, A, alpha = curves[label]
            c = np.geomspace(mine["flops"].min(), mine["flops"].max(), 60)
            iv = multipliers.get(label)
            ax.plot(c, E + A * c ** -alpha, color=col, lw=1.8, ls=_line_style(i),
                    label=f"{label}: k = {iv.fmt('.3g') if iv is not None else '–'}")
    _log_axes(ax)
    ax.set(xlabel=AXIS["FLOPs"], ylabel=f"{loss} ({unit})",
           title=f"{title}\nfixed epochs: one point per run, pooled fit L = E + A (k C)^-alpha ({model} model)")
    ax.grid(True, alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, stem)


@_styled
def isoflop_curves(fits: Mapping[str, IsoflopFit], title: str, stem: Path, weak: frozenset[str] = frozenset(),
                   unit: str = "nats/token", loss: str = "validation loss") -> Path:
    """Per structure: loss vs N_eff per budget (colour: budget, one legend entry each), the interpolant and N*
    (hollow star: dropped budget); `(weak)` in the title of a weak fit."""
    labels = list(fits)
    ncols = min(4, len(labels))
    fig, axes = _figure(ncols, int(np.ceil(len(labels) / ncols)), width=4.2, height=3.3)
    budgets = np.array([c.flops for f in fits.values() for c in f.curves])
    norm = LogNorm(budgets.min(), budgets.max())
    cmap = colormaps["viridis"]
    for ax, label in zip(axes, labels):
        fit = fits[label]
        used = fit.budgets.set_index("flops")["used"]
        cols = [cmap(norm(c.flops)) for c in fit.curves]
        ax.scatter(np.concatenate([c.n for c in fit.curves]), np.concatenate([c.loss for c in fit.curves]),
                   color=np.repeat(cols, [len(c.n) for c in fit.curves], axis=0), s=8)
        ax.add_collection(LineCollection([np.column_stack([np.exp(c.fine_log_n), np.exp(c.fine_log_loss)])
                                          for c in fit.curves], colors=cols, linewidths=1))
        best = [int(np.argmin(c.fine_log_loss)) for c in fit.curves]
        ok = np.array([bool(used.get(c.flops, False)) for c in fit.curves])
        ax.scatter([np.exp(c.fine_log_n[k]) for c, k in zip(fit.curves, best)],
                   [np.exp(c.fine_log_loss[k]) for c, k in zip(fit.curves, best)], marker="*", s=70, zorder=4,
                   color=[col if good else (1, 1, 1, 0) for col, good in zip(cols, ok)], edgecolor="black",
                   linewidth=0.5)
        _log_axes(ax)
        ax.set_title(f"{label}{_fit_note(label, 'weak' if label in weak else None)}\na = {fit.a.fmt('.3f')}")
        ax.grid(True, alpha=0.2)
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    shown = {short_number(c): c for c in np.unique(budgets)}  # labels' budgets a rounding apart: one entry
    handles = [Line2D([], [], color=cmap(norm(c)), marker="o", ms=4, label=f"C = {text}")
               for text, c in shown.items()]
    fig.legend(handles=handles, title="FLOP budget", loc="center right", frameon=False)
    fig.supxlabel("effective parameters N_eff (training FLOPs per token / 6)")
    fig.supylabel(f"{loss} ({unit})")
    fig.suptitle(f"{title}: isoFLOP curves (star: N*, hollow: dropped budget)")
    return _save(fig, stem)


@_styled
def optimal_size(fits: Mapping[str, IsoflopFit], title: str, stem: Path) -> Path:
    """N*(C) per budget with its interval, and each structure's fitted N* = k C^a with band."""
    fig, (ax,) = _figure(width=9.0, height=5.4)
    colours = _colours(list(fits))
    for i, (label, fit) in enumerate(fits.items()):
        col = colours[label]
        b = fit.budgets[fit.budgets["used"]]
        yerr = np.vstack([b["n_star"] - b["n_star_lo"], b["n_star_hi"] - b["n_star"]]).clip(min=0)
        ax.errorbar(b["flops"], b["n_star"], yerr=yerr, fmt="o", color=col, ms=4, capsize=2)
        c = np.geomspace(b["flops"].min(), b["flops"].max(), 50)
        reps = np.exp(fit.replicates[:, :1] * np.log(c)[None, :] + fit.replicates[:, 1:2])
        band = np.nanpercentile(reps, [2.5, 97.5], axis=0)
        ax.fill_between(c, band[0], band[1], color=col, alpha=0.2, lw=0)
        ax.plot(c, np.exp(fit.a.value * np.log(c) + fit.intercept), color=col, lw=2, ls=_line_style(i),
                label=f"{label}: N* ~ C^{fit.a.fmt('.3f')}")
    _log_axes(ax)
    ax.set(xlabel="training compute C (FLOPs)", ylabel="loss-minimising size N*_eff (parameters)",
           title=f"{title}: compute-optimal size")
    ax.grid(True, alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, stem)


@_styled
def multipliers(fits: Mapping[str, FrontierFit], dense: str, title: str, stem: Path,
                statuses: Mapping[str, str] | None = None, pooled: Mapping[str, Interval] | None = None,
                pooled_flops: float | None = None) -> Path:
    """Compute multiplier vs dense at matched loss from the two frontier fits, across dense's budget range
    (1 = parity), each label's status in its legend entry (a failed one dashed grey); the pooled fit's multipliers
    (the headline) as points with their intervals at `pooled_flops`.

    A multiplier of 0 (a loss the structure never reaches) has no place on a log axis: the y-range is set by
    the finite positive point estimates (and 1) with a factor 3 of margin, and bands are clipped to it.
    """
    statuses, pooled = statuses or {}, pooled or {}
    fig, (ax,) = _figure(width=8.0, height=5.0)
    colours = _colours(list(fits))
    ref = fits[dense]
    c = np.geomspace(ref.envelope["flops"].min(), ref.envelope["flops"].max(), 25)
    lines = {label: [compute_multiplier(fit, ref, float(ci)) for ci in c] for label, fit in fits.items()
             if label != dense}
    values = np.array([iv.value for ivs in lines.values() for iv in ivs] + [1.0]
                      + [iv.value for label, iv in pooled.items() if label != dense])
    values = values[np.isfinite(values) & (values > 0)]
    lo, hi = values.min() / 3, values.max() * 3
    for i, (label, ivs) in enumerate(lines.items(), start=1):
        point = np.array([iv.value for iv in ivs])
        failed = statuses.get(label) == "failed"
        col = "0.6" if failed else colours[label]
        ax.plot(c, np.where(point > 0, point, np.nan), color=col, lw=2, ls="--" if failed else _line_style(i),
                label=f"{label}: frontier fits{_fit_note(label, statuses.get(label))}")
        band = np.clip(np.nan_to_num(np.array([[iv.lo, iv.hi] for iv in ivs]), nan=lo), lo, hi)
        ax.fill_between(c, band[:, 0], band[:, 1], color=col, alpha=0.15 if failed else 0.2, lw=0)
    for label, iv in pooled.items():
        if label == dense or pooled_flops is None or not iv.value > 0:
            continue
        err = np.clip([[iv.value - iv.lo], [iv.hi - iv.value]], 0, None)
        ax.errorbar([pooled_flops], [iv.value], yerr=np.nan_to_num(err), fmt="D", ms=7, capsize=4,
                    color=colours.get(label, "black"), markeredgecolor="black", zorder=5,
                    label=f"{label}: pooled fit {iv.fmt('.3g')}")
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_ylim(lo, hi)
    _log_axes(ax)
    _log_ticks(ax.yaxis, lo, hi, must=(1.0,))
    ax.set(xlabel="dense training compute C (FLOPs)", ylabel="compute multiplier (dense C / label C)",
           title=f"{title}\ncompute multiplier vs {dense} at matched loss (>1: less compute than {dense})")
    ax.grid(True, alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, stem)


@_styled
def taxonomy(rows: pd.DataFrame, title: str, stem: Path) -> Path:
    """Frontier exponent against omega, psi and nu (rows: label, omega, psi, nu, alpha, lo, hi), with LS lines."""
    fig, axes = _figure(3, 1, width=4.0, height=3.8)
    fig.subplots_adjust(left=0.06, right=0.72, bottom=0.14, top=0.86, wspace=0.25)
    colours = _colours(list(rows["label"]))
    jitter = (np.arange(len(rows)) - (len(rows) - 1) / 2) * 0.004  # separates structures sharing a coordinate
    for ax, coord in zip(axes, ("omega", "psi", "nu")):
        x = rows[coord].to_numpy(float)
        for i, r in enumerate(rows.itertuples()):
            ax.errorbar(x[i] + jitter[i], r.alpha, yerr=[[max(r.alpha - r.lo, 0)], [max(r.hi - r.alpha, 0)]],
                        fmt="o", ms=4, capsize=2, color=colours[r.label], label=r.label)
        if np.unique(x).size > 1:
            slope, icpt = np.polyfit(x, rows["alpha"].to_numpy(float), 1)
            xs = np.array([x.min(), x.max()])
            ax.plot(xs, icpt + slope * xs, color="black", lw=1, ls="--")
        ax.set_xlabel(coord)
        ax.grid(True, alpha=0.25)
    axes[0].set_ylabel("frontier exponent alpha")
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.03, 1.0), frameon=False)
    fig.suptitle(f"{title}: Einsum taxonomy (dashed: least-squares trend)")
    return _save(fig, stem)


@_styled
def lr_sweeps(curves: pd.DataFrame, sweeps: pd.DataFrame, title: str, stem: Path) -> Path:
    """Loss vs lr for each width (dotted: lr*), one panel per structure and parametrization.

    curves: lr_transfer.lr_curves rows (label, parametrization, width, lr, loss, ...); sweeps: lr_sweeps rows.
    """
    keys = list(sweeps.groupby(["label", "parametrization"]).groups)
    ncols = min(4, len(keys))
    fig, axes = _figure(ncols, int(np.ceil(len(keys) / ncols)), width=4.2, height=3.3)
    widths = sweeps["width"].to_numpy(float)
    norm = LogNorm(widths.min(), widths.max() * 1.5)
    cmap = colormaps["plasma"]
    for ax, (label, param) in zip(axes, keys):
        sw = sweeps[(sweeps["label"] == label) & (sweeps["parametrization"] == param)].sort_values("width")
        mine = curves[(curves["label"] == label) & (curves["parametrization"] == param)]
        for width, g in mine.groupby("width"):
            col = cmap(norm(float(width)))
            ax.plot(g["lr"], g["loss"], "o-", color=col, ms=3, lw=1)
            for lr_star in sw.loc[sw["width"] == width, "lr_star"]:
                ax.axvline(lr_star, color=col, lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(f"{label}\n({param})")
        ax.grid(True, alpha=0.2)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    fig.colorbar(ScalarMappable(norm, cmap), ax=list(axes[:len(keys)]), label="width", shrink=0.5, fraction=0.03,
                 pad=0.02)
    fig.supxlabel("learning rate")
    fig.supylabel("final validation loss (mean over seeds)")
    fig.suptitle(f"{title}: learning-rate sweeps (dotted: interpolated optimum lr*)")
    return _save(fig, stem)


@_styled
def lr_vs_width(sweeps: pd.DataFrame, title: str, stem: Path) -> Path:
    """lr* against width for every structure and parametrization (x: optimum at the sweep's edge)."""
    fig, (ax,) = _figure(width=9.0, height=5.0)
    keys = list(sweeps.groupby(["label", "parametrization"]).groups)
    colours = _colours([f"{k[0]} ({k[1]})" for k in keys])
    for i, (label, param) in enumerate(keys):
        sw = sweeps[(sweeps["label"] == label) & (sweeps["parametrization"] == param)].sort_values("width")
        name = f"{label} ({param})"
        ax.plot(sw["width"].astype(float), sw["lr_star"], marker="o", ms=3, color=colours[name], label=name,
                ls=_line_style(i))
        edge = sw["at_edge"].to_numpy(bool)
        ax.scatter(sw["width"].astype(float)[edge], sw["lr_star"][edge], marker="x", color="red", zorder=3)
    _log_axes(ax)
    ax.set(xlabel="width", ylabel="optimal lr*", title=f"{title}: optimal learning rate vs width")
    ax.grid(True, alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, stem)


@_styled
def coordinate_checks(checks: Mapping[str, pd.DataFrame], stem: Path) -> Path:
    """Per coordinate check: each layer's activation update after the last step against width (flat: muP holds)."""
    names = list(checks)
    ncols = min(3, len(names))
    fig, axes = _figure(ncols, int(np.ceil(len(names) / ncols)), width=4.6, height=3.6)
    for ax, name in zip(axes, names):
        df = checks[name]
        last = df[df["step"] == df["step"].max()]
        per = last.groupby(["layer", "width"], sort=False)["delta_rms"].mean().reset_index()
        slopes = []
        for layer, g in per.groupby("layer", sort=False):
            g = g[g["delta_rms"] > 0].sort_values("width")
            if len(g) < 2:
                continue
            slopes.append(np.polyfit(np.log(g["width"]), np.log(g["delta_rms"]), 1)[0])
            ax.plot(g["width"], g["delta_rms"], marker="o", ms=3, lw=1, label=f"{layer} ({slopes[-1]:+.2f})")
        _log_axes(ax)
        worst = f"{max(np.abs(slopes)):.2f}" if slopes else "n/a"
        ax.set_title(f"{name}\nlargest |slope| {worst}")
        ax.grid(True, alpha=0.2)
        ax.legend(fontsize=7, loc="lower left")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.supxlabel("width")
    fig.supylabel("layer output update rms (last step)")
    fig.suptitle("coordinate checks (log-log slope vs width in brackets; ~0 means width-independent updates)")
    return _save(fig, stem)
