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
        fig.subplots_adjust(left=0.9 / (width * ncols), right=0.99, bottom=0.7 / h, top=1 - 0.9 / h, wspace=0.28,
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
                  ls=("-", "--", ":")[i // 10 % 3])
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
            _fit_band(ax, fit, c, colours[label], f"alpha = {fit.params['alpha'].fmt('.3f')}")
            if ref is not None and label != dense:
                ax.plot(c, ref.predict(c), color="black", lw=1, ls="--", label=f"{dense} fit")
            ax.legend(fontsize=7, loc="lower left")
        _log_axes(ax)
        ax.set_title(label if fit else f"{label} (not fitted)", fontsize=8)
        ax.grid(True, alpha=0.2)
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    fig.supxlabel("training FLOPs C")
    fig.supylabel("validation loss")
    fig.suptitle(f"{title}: loss vs FLOPs per structure (grey: runs, dots: envelope)")
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
    for label, fit in fits.items():
        col = colours[label]
        b = fit.budgets[fit.budgets["used"]]
        yerr = np.vstack([b["n_star"] - b["n_star_lo"], b["n_star_hi"] - b["n_star"]]).clip(min=0)
        ax.errorbar(b["flops"], b["n_star"], yerr=yerr, fmt="o", color=col, ms=4, capsize=2)
        c = np.geomspace(fit.budgets["flops"].min(), fit.budgets["flops"].max(), 50)
        reps = np.exp(fit.replicates[:, :1] * np.log(c)[None, :] + fit.replicates[:, 1:2])
        band = np.nanpercentile(reps, [2.5, 97.5], axis=0)
        ax.fill_between(c, band[0], band[1], color=col, alpha=0.2, lw=0)
        ax.plot(c, np.exp(fit.a.value * np.log(c) + fit.intercept), color=col, lw=2,
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
    for label, fit in fits.items():
        if label == dense:
            continue
        ivs = [compute_multiplier(fit, ref, float(ci)) for ci in c]
        ax.plot(c, [iv.value for iv in ivs], color=colours[label], lw=2, label=label)
        ax.fill_between(c, [iv.lo for iv in ivs], [iv.hi for iv in ivs], color=colours[label], alpha=0.2, lw=0)
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    _log_axes(ax)
    ax.set(xlabel="dense training FLOPs C", ylabel="compute multiplier (dense C / structure C)",
           title=f"{title}: compute multiplier vs {dense}")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, stem)


def taxonomy(rows: pd.DataFrame, title: str, stem: Path) -> Path:
    """Frontier exponent against omega, psi and nu (rows: label, omega, psi, nu, alpha, lo, hi)."""
    fig, axes = _figure(3, 1, width=4.2, height=3.8)
    yerr = np.vstack([rows["alpha"] - rows["lo"], rows["hi"] - rows["alpha"]]).clip(min=0)
    for ax, coord in zip(axes, ("omega", "psi", "nu")):
        ax.errorbar(rows[coord], rows["alpha"], yerr=yerr, fmt="o", capsize=2)
        for r in rows.itertuples():
            ax.annotate(r.label.replace("einsum", ""), (getattr(r, coord), r.alpha), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
        ax.set(xlabel=coord, ylabel="frontier exponent alpha")
        ax.grid(True, alpha=0.25)
    fig.suptitle(f"{title}: Einsum taxonomy")
    return _save(fig, stem)


def lr_vs_width(runs: pd.DataFrame, sweeps: pd.DataFrame, title: str, stem: Path) -> Path:
    """Loss vs lr per width for each structure/parametrization (dotted: lr*), then lr* vs width for all."""
    keys = list(sweeps.groupby(["label", "parametrization"]).groups)
    ncols = min(4, len(keys) + 1)
    fig, axes = _figure(ncols, int(np.ceil((len(keys) + 1) / ncols)), width=4.2, height=3.3)
    widths = np.sort(sweeps["width"].unique().astype(float))
    norm = LogNorm(widths.min(), widths.max() * 1.5)
    cmap = colormaps["plasma"]
    colours = _colours([f"{k[0]} ({k[1]})" for k in keys])
    summary = axes[len(keys)]
    for ax, (label, param) in zip(axes, keys):
        sw = sweeps[(sweeps["label"] == label) & (sweeps["parametrization"] == param)].sort_values("width")
        mine = runs[(runs["label"] == label) & (runs["parametrization"] == param)]
        for s in sw.itertuples():
            col = cmap(norm(float(s.width)))
            g = mine[(mine["width"] == s.width) & (mine["tokens_target"].astype(str) == s.tokens_target)]
            per_lr = g.groupby("lr")["final_val_loss"].mean()
            ax.plot(per_lr.index, per_lr.to_numpy(), "o-", color=col, ms=3, lw=1, label=f"width {s.width:g}")
            ax.axvline(s.lr_star, color=col, lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(f"{label}\n({param})", fontsize=8)
        ax.grid(True, alpha=0.2)
        ax.legend(fontsize=6, loc="upper center")
        name = f"{label} ({param})"
        edge = sw["at_edge"].to_numpy(bool)
        summary.plot(sw["width"].astype(float), sw["lr_star"], "o-", ms=3, color=colours[name], label=name)
        summary.scatter(sw["width"].astype(float)[edge], sw["lr_star"][edge], marker="x", color="red", zorder=3)
    _log_axes(summary)
    summary.set(xlabel="width", ylabel="optimal lr*", title="lr* vs width (x: sweep edge)")
    summary.title.set_fontsize(9)
    summary.grid(True, alpha=0.2)
    summary.legend(fontsize=5, loc="lower left", ncols=2)
    for ax in axes[len(keys) + 1:]:
        ax.set_visible(False)
    fig.supxlabel("learning rate (panels) / width (last panel)")
    fig.supylabel("final validation loss")
    fig.suptitle(f"{title}: learning-rate transfer")
    return _save(fig, stem)


def coordinate_check(coords: pd.DataFrame, runs: pd.DataFrame, title: str, stem: Path) -> Path:
    """Activation scale per role against width at the last recorded step, one panel per structure/param."""
    df = coords.merge(runs[["run_id", "label", "parametrization", "width"]], on="run_id")
    df = df[df["step"] == df.groupby("run_id")["step"].transform("max")]
    keys = list(df.groupby(["label", "parametrization"]).groups)
    fig, axes = _figure(min(3, len(keys)), int(np.ceil(len(keys) / 3)), width=4.6, height=3.6)
    for ax, (label, param) in zip(axes, keys):
        sub = df[(df["label"] == label) & (df["parametrization"] == param)]
        for role, g in sub.groupby("role"):
            per_w = g.groupby("width")["act_rms"].mean()
            ax.plot(per_w.index, per_w.to_numpy(), "o-", ms=3, label=str(role))
        _log_axes(ax)
        ax.set(xlabel="width", ylabel="activation RMS", title=f"{label} ({param})")
        ax.grid(True, alpha=0.25)
        ax.legend(fontsize=6, loc="lower left")
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: coordinate check (flat lines: width-independent activations)")
    return _save(fig, stem)
