"""Report of the coordinate-check suite: slopes and ratios per entry x parametrization, verdicts, plots.

From the per-run table of scaling.coordsuite (one row per entry, parametrization, width, seed with delta_h):

    slope  per seed, the least-squares slope of log delta_h on log width; reported as the seed mean [min, max]
    ratio  per seed, delta_h(widest) / delta_h(narrowest); reported as the seed geometric mean [min, max]

A curve is flat when |slope| < FLAT (over a 16x width range: a ratio between 1/2 and 2, the paper's "within
about 2x") and falls when slope < -FLAT. Theory: structure-aware is flat; naive falls as d^-1/2 for a factor
whose fan-in grows as sqrt(d) (slope -1/2) and is flat, with a constant-factor smaller LR, when every fan-in ~ d.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

FLAT = 0.25  # |slope| below this is flat; below -FLAT is falling
DEFAULT_COMMAND = "python -m scaling.coordsuite"  # what `make coord-checks` runs
NEAR_DENSE = 2.0  # structure-aware delta_h at the widest width within this factor of dense's (CBS: "about 2x")
PAPER_SLOPE = -np.log(6) / np.log(4096 / 16)  # CBS Fig. 2a: naive BTT / Kron delta-h falls ~6x over 16..4096
LOWER = 0.8  # flat_lower: naive delta_h at the widest width below this fraction of structure-aware's
NAIVE_CLAIMS = {"falls": "naive falls with width", "flat_lower": "naive flat but lower",
                "same": "one factor: naive = structure-aware"}


def claim(naive_expect: str, source: str) -> str:
    """The claim tested: the paper's includes the level (within 2x of dense), the fan-in rule's does not."""
    aware = "structure-aware flat" + (", within 2x of dense" if source == "paper" and naive_expect != "same" else "")
    return f"{NAIVE_CLAIMS[naive_expect]}; {aware}"


def _geo(values: pd.Series) -> float:
    return float(np.exp(np.log(values).mean()))


def curve_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (entry, parametrization): slope and ratio over seeds, and the seed-mean delta_h at each width."""
    rows = []
    for (entry, mode), g in runs.groupby(["entry", "parametrization"], sort=False):
        slopes, ratios = [], []
        for _, s in g.groupby("seed"):
            s = s.sort_values("width")
            slopes.append(np.polyfit(np.log(s["width"]), np.log(s["delta_h"]), 1)[0])
            ratios.append(s["delta_h"].iloc[-1] / s["delta_h"].iloc[0])
        at = g.groupby("width")["delta_h"].agg(_geo)
        rows.append({"entry": entry, "structure": g["structure"].iloc[0], "parametrization": mode,
                     "slope": float(np.mean(slopes)), "slope_min": min(slopes), "slope_max": max(slopes),
                     "ratio": _geo(pd.Series(ratios)), "ratio_min": min(ratios), "ratio_max": max(ratios),
                     "delta_h_narrowest": at.iloc[0], "delta_h_widest": at.iloc[-1], "seeds": len(slopes)})
    return pd.DataFrame(rows)


def verdicts(stats: pd.DataFrame, expectations: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """One row per entry: its claim, the two curves' ratios, the comparisons, and the verdict with its reasons.

    `expectations` maps entry -> (naive expectation, source) from the suite file. The paper (CBS Fig. 2a) also
    puts structure-aware delta-h within about 2x of dense; the fan-in rule predicts only the slopes.
    """
    by = stats.set_index(["entry", "parametrization"])
    dense = by["delta_h_widest"].get(("dense", "structure_aware"))
    rows = []
    for entry, (naive_expect, source) in expectations.items():
        aware, naive = by.loc[(entry, "structure_aware")], by.loc[(entry, "naive")]
        vs_dense = aware["delta_h_widest"] / dense if dense is not None else np.nan
        naive_vs_aware = naive["delta_h_widest"] / aware["delta_h_widest"]
        failed = []
        if abs(aware["slope"]) >= FLAT:
            failed.append(f"structure-aware not flat (slope {_span(aware, 'slope', '+.2f')})")
        if source == "paper" and not np.isnan(vs_dense) and not 1 / NEAR_DENSE <= vs_dense <= NEAR_DENSE:
            failed.append(f"structure-aware {vs_dense:.2f}x dense, not within {NEAR_DENSE:g}x")
        if naive_expect == "falls" and naive["slope"] >= -FLAT:
            failed.append(f"naive does not fall (slope {_span(naive, 'slope', '+.2f')})")
        if naive_expect == "flat_lower":
            if abs(naive["slope"]) >= FLAT:
                failed.append(f"naive not flat (slope {_span(naive, 'slope', '+.2f')})")
            if naive_vs_aware >= LOWER:
                failed.append(f"naive not lower ({naive_vs_aware:.2f}x structure-aware)")
        if naive_expect == "same" and not np.isclose(naive_vs_aware, 1.0, rtol=1e-5):
            failed.append(f"naive differs from structure-aware ({naive_vs_aware:.4f}x)")
        good, bad = ("reproduced", "not reproduced") if source == "paper" else ("as predicted", "not as predicted")
        rows.append({"entry": entry, "structure": aware["structure"], "source": source,
                     "claim": claim(naive_expect, source), "aware_slope": aware["slope"], "aware_ratio": aware["ratio"],
                     "naive_slope": naive["slope"], "naive_ratio": naive["ratio"], "aware_vs_dense": vs_dense,
                     "naive_vs_aware": naive_vs_aware,
                     "verdict": good if not failed else f"{bad}: {'; '.join(failed)}"})
    return pd.DataFrame(rows)


def _tally(verdict: pd.DataFrame) -> str:
    """One line: how many of the paper's claims reproduced, and how many rule predictions held."""
    parts = []
    for source, good, what in (("paper", "reproduced", "of the paper's claims reproduced"),
                               ("rule", "as predicted", "of the fan-in rule's predictions held")):
        mine = verdict[verdict["source"] == source]
        if len(mine):
            ok = mine[mine["verdict"] == good]["entry"].tolist()
            bad = mine[mine["verdict"] != good]["entry"].tolist()
            parts.append(f"{len(ok)} of {len(mine)} {what}" + (f" (not: {', '.join(bad)})" if bad else ""))
    return "**" + "; ".join(parts) + ".**"


def _span(row: pd.Series, key: str, fmt: str) -> str:
    """A seed statistic with its seed range, e.g. -0.23 [-0.30, -0.16]."""
    return f"{row[key]:{fmt}} [{row[key + '_min']:{fmt}}, {row[key + '_max']:{fmt}}]"


def markdown(suite, stats: pd.DataFrame, verdict: pd.DataFrame, runs: pd.DataFrame, facts: dict[str, str]) -> str:
    """The report text: what was run, the per-curve table, the verdicts and the plots."""
    w0, w1 = min(suite.widths), max(suite.widths)
    means = runs.groupby(["entry", "parametrization", "width"], sort=False)["delta_h"].agg(_geo).unstack("width")
    lines = [
        "# Coordinate checks: structure-aware vs naive muP, every structure (CBS Fig. 2a)", "",
        "Regenerate with one command (about " + facts["wall_s"] + " s on one core here)"
        + (", or `make coord-checks`:" if facts["command"] == DEFAULT_COMMAND else ":"), "",
        f"    {facts['command']}", "",
        f"Configuration: `conf/coord_checks.yaml`. {suite.description.strip()}", "",
        f"- data: {facts['data']}; run overrides `{' '.join(suite.run)}`",
        f"- widths {suite.widths} ({w1 // w0}x), {suite.steps} AdamW steps (lr {_lr(suite)}) on one fixed batch of "
        f"{suite.batch_size}, {suite.seeds} seeds (model inits) per width; delta-h = geometric mean over the "
        f"{', '.join(suite.roles)} layers of rms(h_t - h_0) after the last step",
        f"- skipped structures: {suite.skip or 'none (every registered structure is checked)'}",
        f"- {facts['date']}, torch {facts['torch']}, {facts['threads']} thread(s), {facts['machine']}", "",
        "## Verdicts", "",
        f"Flat: |slope| < {FLAT} (a ratio within 2x over the {w1 // w0}x range); falls: slope < -{FLAT}. "
        "Theory: naive slope -1/2 when a factor's fan-in grows as sqrt(d); the paper's 6x fall over widths 16..4096 "
        f"(256x) is a slope of {PAPER_SLOPE:+.2f}, i.e. a {(w1 / w0) ** -PAPER_SLOPE:.1f}x fall over {w1 // w0}x. "
        f"'aware x dense': structure-aware delta-h at width {w1} over dense's (the paper's claim: within "
        f"{NEAR_DENSE:g}x); 'naive/aware': naive over structure-aware at width {w1} ('lower': below {LOWER:g}).", "",
        _tally(verdict), "",
        f"| entry | structure | claim (source) | aware ratio {w1}/{w0} | naive ratio {w1}/{w0} | aware x dense | "
        "naive/aware | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in verdict.itertuples():
        lines.append(f"| {r.entry} | {r.structure} | {r.claim} ({r.source}) | {r.aware_ratio:.2f} | "
                     f"{r.naive_ratio:.2f} | {r.aware_vs_dense:.2f} | {r.naive_vs_aware:.2f} | {r.verdict} |")
    lines += ["", f"## delta-h slope and ratio delta-h({w1}) / delta-h({w0}) per structure x parametrization", "",
              "Seed mean [min, max] of the per-seed slope; seed geometric mean [min, max] of the per-seed ratio; "
              "then the seed geometric mean of delta-h at each width.", "",
              "| entry | parametrization | slope | ratio | " + " | ".join(f"{w}" for w in means.columns) + " |",
              "|---|---|---|---|" + "---|" * len(means.columns)]
    for _, r in stats.iterrows():
        cells = " | ".join(f"{v:.3g}" for v in means.loc[(r["entry"], r["parametrization"])])
        lines.append(f"| {r['entry']} | {r['parametrization']} | {_span(r, 'slope', '+.2f')} | "
                     f"{_span(r, 'ratio', '.2f')} | {cells} |")
    lines += ["", "## Plots", "", "All structures, structure-aware (left) and naive (right), seed means:", "",
              "![delta-h against width](delta_h.png)", "",
              "One panel per structure, structure-aware (solid) vs naive (dashed), seed min-max bands; grey dotted: "
              "dense structure-aware:", "", "![per-structure grid](grid.png)", "",
              "`coord.csv` holds one row per run (entry, parametrization, width, seed): delta_h, its parts per "
              "role, and the input and head layers' updates.", ""]
    return "\n".join(lines)


def _lr(suite) -> str:
    lrs = [o.split("=", 1)[1] for o in suite.run if o.startswith("train.lr=")]
    return lrs[-1] if lrs else "3e-3 (train default)"


def plot_overlay(runs: pd.DataFrame, path: Path) -> None:
    """Two panels (structure_aware | naive), one line per entry: seed-mean delta_h against width."""
    modes = list(dict.fromkeys(runs["parametrization"]))
    fig, axes = plt.subplots(1, len(modes), figsize=(6.5 * len(modes), 5), sharey=True, squeeze=False)
    entries = list(dict.fromkeys(runs["entry"]))
    colors = plt.cm.tab20(np.linspace(0, 1, max(len(entries), 2)))
    for ax, mode in zip(axes[0], modes):
        for color, entry in zip(colors, entries):
            g = runs[(runs["entry"] == entry) & (runs["parametrization"] == mode)].groupby("width")["delta_h"]
            style = dict(color="black", lw=2.5) if entry == "dense" else dict(color=color)
            ax.plot(g.apply(_geo).index, g.apply(_geo).values, "o-", label=entry, **style)
        ax.set(title=mode, xlabel="width", xscale="log", yscale="log")
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("delta-h: rms change of hidden-layer outputs")
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", dpi=110)
    plt.close(fig)


def plot_grid(runs: pd.DataFrame, path: Path, columns: int = 4) -> None:
    """One panel per entry: structure_aware solid vs naive dashed, seed min-max band, dense as a reference."""
    entries = list(dict.fromkeys(runs["entry"]))
    rows = -(-len(entries) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.0 * rows), sharex=True, sharey=True,
                             squeeze=False)
    dense = runs[(runs["entry"] == "dense") & (runs["parametrization"] == "structure_aware")]
    reference = dense.groupby("width")["delta_h"].agg(_geo)
    for ax, entry in zip(axes.flat, entries):
        if not reference.empty:
            ax.plot(reference.index, reference.values, ":", color="grey", lw=1.5)
        for mode, style, color in (("structure_aware", "-", "tab:blue"), ("naive", "--", "tab:red")):
            g = runs[(runs["entry"] == entry) & (runs["parametrization"] == mode)].groupby("width")["delta_h"]
            if g.ngroups == 0:
                continue
            ax.fill_between(g.min().index, g.min().values, g.max().values, color=color, alpha=0.2, lw=0)
            ax.plot(g.apply(_geo).index, g.apply(_geo).values, style, marker="o", ms=3, color=color, label=mode)
        ax.set_title(entry, fontsize=10)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes.flat[len(entries):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    fig.supxlabel("width")
    fig.supylabel("delta-h")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", dpi=110)
    plt.close(fig)


def write_report(suite, runs: pd.DataFrame, facts: dict[str, str], out: Path) -> pd.DataFrame:
    """Write coord.csv, delta_h.png, grid.png and report.md into `out`; return the verdict table."""
    out.mkdir(parents=True, exist_ok=True)
    stats = curve_stats(runs)
    expectations = {name: (e.naive, e.source) for name, e in suite.entries().items()
                    if set(runs[runs["entry"] == name]["parametrization"]) >= {"structure_aware", "naive"}}
    verdict = verdicts(stats, expectations)
    runs.to_csv(out / "coord.csv", index=False, float_format="%.6g")
    plot_overlay(runs, out / "delta_h.png")
    plot_grid(runs, out / "grid.png")
    (out / "report.md").write_text(markdown(suite, stats, verdict, runs, facts))
    return verdict
