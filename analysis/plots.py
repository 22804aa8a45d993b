"""Figures of the report, drawn on matplotlib's object API with the Agg canvas (no pyplot, no display).

Each function draws one figure and saves it as PNG and PDF under the given stem; it returns the PNG path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from analysis.compare import compute_multiplier
from analysis.frontier import FrontierFit
from analysis.isoflop import IsoflopFit

DPI = 110


def _figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.4) -> tuple[Figure, np.ndarray]:
    """A figure with a grid of axes; grids use fixed spacing (constrained layout is slow on many panels)."""
    grid = ncols * nrows > 1
    fig = Figure(figsize=(width * ncols, height * nrows), layout=None if grid else "constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    if grid:
        h = height * nrows
        fig.subplots_adjust(left=1.1 / (width * ncols), right=0.99, bottom=0.7 / h, top=1 - 0.9 / h, wspace=0.28,
                            hspace=0.5)
    return fig, axes


def _log_axes(ax) -> None:
    """Log-log axes without minor ticks (they dominate drawing time); a narrow axis gets plain-number ticks."""
    ax.set(xscale="log", yscale="log")
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        axis.set_minor_locator(NullLocator())
        if lo > 0 and hi / lo < 30:
            ticks = [t for t in MaxNLocator(5).tick_values(lo, hi) if lo <= t <= hi and t > 0]
            axis.set_major_locator(FixedLocator(ticks))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))


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


def _fit_band(ax, fit: FrontierFit, c: np.ndarray, col, label: str | None, ls: str = "-") -> None:
    band = np.nanpercentile(fit.replicate_predictions(c), [2.5, 97.5], axis=0)
    ax.fill_between(c, band[0], band[1], color=col, alpha=0.2, lw=0)
    ax.plot(c, fit.predict(c), color=col, lw=1.8, ls=ls, label=label)


def frontiers(fits: Mapping[str, FrontierFit], title: str, stem: Path) -> Path:
    """Every structure's envelope (dots) and fitted L(C) with its band, on one set of axes."""
    fig, (ax,) = _figure(width=9.0, height=5.4)
    colours = _colours(list(fits))
    for i, (label, fit) in enumerate(fits.items()):
        col, env = colours[label], fit.envelope
        ax.scatter(env["flops"], env["loss"], color=col, s=10, zorder=3, edgecolor="white", linewidth=0.3)
        c = np.geomspace(env["flops"].min(), env["flops"].max(), 60)
        _fit_band(ax, fit, c, col, f"{label}: alpha = {fit.params['alpha'].fmt('.3f')}",
                  ls=_line_style(i))
    _log_axes(ax)
    ax.set(xlabel="training FLOPs C", ylabel="validation loss (envelope)",
           title=f"{title}: loss frontiers L(C) = E + A C^-alpha")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, stem)


def loss_vs_flops(curves: Mapping[str, pd.DataFrame], fits: Mapping[str, FrontierFit], dense: str | None,
                  title: str, stem: Path) -> Path:
    """One panel per structure: every run's curve (grey), the envelope (dots), the fit and dense's fit (dashed)."""
    labels = list(curves)
    ncols = min(4, len(labels))
    fig, axes = _figure(ncols, int(np.ceil(len(labels) / ncols)), width=4.2, height=3.3)
    colours = _colours(labels)
    ref = fits.get(dense) if dense else None
    for ax, label in zip(axes, labels):
        cv = curves[label].sort_values(["run_id", "flops"])
        segments = [np.column_stack([g["flops"], g["loss"]]) for _, g in cv.groupby("run_id", sort=False)]
        ax.add_collection(LineCollection(segments, colors="0.55", alpha=0.35, linewidths=0.6))
        ax.autoscale_view()
        fit = fits.get(label)
        if fit is not None:
            env = fit.envelope
            ax.scatter(env["flops"], env["loss"], color=colours[label], s=9, zorder=3)
            c = np.geomspace(env["flops"].min(), env["flops"].max(), 60)
            _fit_band(ax, fit, c, colours[label], None)
            if ref is not None and label != dense:
                ax.plot(c, ref.predict(c), color="black", lw=1, ls="--")
        _log_axes(ax)
        ax.set_title(f"{label}\nalpha = {fit.params['alpha'].fmt('.3f')}" if fit else f"{label}\n(not fitted)",
                     fontsize=8)
        ax.grid(True, alpha=0.2)
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    fig.supxlabel("training FLOPs C")
    fig.supylabel("validation loss")
    fig.suptitle(f"{title}: loss vs FLOPs per structure (grey: runs, dots: envelope, line: fit with its band, "
                 f"dashed: {dense} fit)" if dense else f"{title}: loss vs FLOPs per structure (grey: runs, dots: "
                 "envelope, line: fit with its band)")
    return _save(fig, stem)


def isoflop_curves(fits: Mapping[str, IsoflopFit], title: str, stem: Path) -> Path:
    """Per structure: loss vs N_eff per budget (colour: budget), the interpolant and N* (hollow star: dropped)."""
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
        ax.set_title(f"{label}\na = {fit.a.fmt('.3f')}", fontsize=8)
        ax.grid(True, alpha=0.2)
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    fig.colorbar(ScalarMappable(norm, cmap), ax=list(axes[:len(labels)]), label="FLOP budget C", shrink=0.5,
                 fraction=0.03, pad=0.02)
    fig.supxlabel("N_eff = training FLOPs per token / 6")
    fig.supylabel("validation loss")
    fig.suptitle(f"{title}: isoFLOP curves (star: N*, hollow: dropped budget)")
    return _save(fig, stem)


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
    ax.set(xlabel="training FLOPs C", ylabel="N*_eff (loss-minimising size)", title=f"{title}: compute-optimal size")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, stem)


def multipliers(fits: Mapping[str, FrontierFit], dense: str, title: str, stem: Path) -> Path:
    """Compute multiplier vs dense at matched loss, across dense's budget range (1 = parity)."""
    fig, (ax,) = _figure(width=9.0, height=5.0)
    colours = _colours(list(fits))
    ref = fits[dense]
    c = np.geomspace(ref.envelope["flops"].min(), ref.envelope["flops"].max(), 25)
    for i, (label, fit) in enumerate(fits.items()):
        if label == dense:
            continue
        ivs = [compute_multiplier(fit, ref, float(ci)) for ci in c]
        ax.plot(c, [iv.value for iv in ivs], color=colours[label], lw=2, ls=_line_style(i), label=label)
        ax.fill_between(c, [iv.lo for iv in ivs], [iv.hi for iv in ivs], color=colours[label], alpha=0.2, lw=0)
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    _log_axes(ax)
    ax.set(xlabel="dense training FLOPs C", ylabel="compute multiplier (dense C / structure C)",
           title=f"{title}: compute multiplier vs {dense}")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, stem)


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
    axes[-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.03, 1.0), frameon=False)
    fig.suptitle(f"{title}: Einsum taxonomy (dashed: least-squares trend)")
    return _save(fig, stem)


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
        ax.set_title(f"{label}\n({param})", fontsize=8)
        ax.grid(True, alpha=0.2)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    fig.colorbar(ScalarMappable(norm, cmap), ax=list(axes[:len(keys)]), label="width", shrink=0.5, fraction=0.03,
                 pad=0.02)
    fig.supxlabel("learning rate")
    fig.supylabel("final validation loss (mean over seeds)")
    fig.suptitle(f"{title}: learning-rate sweeps (dotted: interpolated optimum lr*)")
    return _save(fig, stem)


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
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, stem)


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
        ax.set_title(f"{name}\nlargest |slope| {worst}", fontsize=8)
        ax.grid(True, alpha=0.2)
        ax.legend(fontsize=5, loc="lower left")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.supxlabel("width")
    fig.supylabel("layer output update rms (last step)")
    fig.suptitle("coordinate checks (log-log slope vs width in brackets; ~0 means width-independent updates)")
    return _save(fig, stem)
