"""A search's report: search.md, search.json and a plot of the loss advantage over (omega, psi, nu), beside the full
analysis report (per-run table, curves, fits) of all its rounds' runs.

Scores are loss advantages over dense, log L*_dense(C) - log L*(C) from the pooled fit (search/driver.py), shown
in percent (100 x the difference of log losses: 1.0 is a loss about 1% below dense's); each comes with the compute
multiplier of the same fit, which says the same on the compute axis but with intervals that can span decades."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from analysis.fit.bootstrap import Interval
from analysis.io.exports import plain
from analysis.report.write import write_report
from analysis.search.driver import SearchRun, advantage
from analysis.search.spec import DENSE


def _fmt(iv: Interval | None) -> str:
    return iv.fmt(".3g") if iv is not None else "-"


def _coords(c) -> str:
    return "-" if c is None else ", ".join(f"{v:.3g}" for v in c)


def _pct(iv: Interval | None) -> str:
    return "-" if iv is None else f"{100 * iv.value:+.2f}% [{100 * iv.lo:+.2f}, {100 * iv.hi:+.2f}]"


def final_fit(run: SearchRun) -> dict[str, tuple[Interval, Interval]]:
    """Every candidate's (loss advantage, multiplier) vs dense in the last pooled fit (at the last round's budget)."""
    pooled = run.report.experiments[0].pooled if run.report is not None else None
    if pooled is None:
        return {}
    return {lab: (advantage(pooled, lab), pooled.multiplier(lab)) for lab in pooled.labels if lab != DENSE}


def _last_measured(run: SearchRun) -> dict[str, tuple[int, Interval]]:
    out: dict[str, tuple[int, Interval]] = {}
    for rec in run.trace.rounds:
        for lab, iv in rec.scores.items():
            out[lab] = (rec.index, iv)
    return out


def verdict(run: SearchRun) -> list[str]:
    """The winner set at the last round against dense and against the best named structure."""
    trace, spec = run.trace, run.spec
    if not trace.winners:
        return ["No candidate has a score: the search measured nothing."]
    final = trace.rounds[-1]
    at = f"C = {final.flops:.3g}" + ("" if trace.reached_final else
                                     f" (the allowance ran out before C = {spec.budget:.3g})")
    fit = final_fit(run)
    best = final.scores[trace.winners[0]]
    mult = f", compute multiplier {_fmt(fit[trace.winners[0]][1])}" if trace.winners[0] in fit else ""
    lines = [f"Winner at {at}: **{trace.winners[0]}**, loss advantage over dense {_pct(best)}{mult}"
             + (" (better than dense: its interval excludes 0)." if best.lo > 0 else
                " (worse than dense: its interval lies below 0)." if best.hi < 0 else
                " (its interval contains 0: not told apart from dense).")]
    if len(trace.winners) > 1:
        lines.append(f"Tied with it (intervals overlap, so noise cannot pick among them): "
                     f"{', '.join(f'{lab} {_pct(final.scores[lab])}' for lab in trace.winners[1:])}.")
    named = [c.label for c in spec.candidates if c.theta is None]
    last = _last_measured(run)
    if named:
        top = max(named, key=lambda lab: fit[lab][0].value if lab in fit else -math.inf)
        if top in fit:
            iv, win = fit[top][0], fit[trace.winners[0]][0]
            relation = ("above it (the intervals do not overlap)" if win.lo > iv.hi else
                        "below it (the intervals do not overlap)" if win.hi < iv.lo else
                        "not told apart from it (the intervals overlap)")
            lines.append(f"Best named structure: {top}, loss advantage at C = {final.flops:.3g} {_pct(iv)}, "
                         f"multiplier {_fmt(fit[top][1])} (last run in round {last[top][0] + 1}); in the final fit "
                         f"the winner ({_pct(win)}) is {relation}.")
    return lines


def markdown(run: SearchRun) -> str:
    spec, trace = run.spec, run.trace
    last, pooled = _last_measured(run), final_fit(run)
    out = [f"# Structure search: {spec.name}", "", *([spec.description.strip(), ""] if spec.description else []),
           f"Budget C = {spec.budget:.3g} training FLOPs; allowance {spec.allowance:.3g}; results in "
           f"`{run.results_root}` (sweeps {', '.join(run.sweeps)}).", "", "## Verdict", "", *verdict(run), "",
           "## Compute", "",
           f"The search trained {run.spent:.3g} FLOPs (dense and the LR check included; the decisions budget "
           f"{trace.spent:.3g}) against {spec.full_grid():.3g} for the equivalent full grid (every candidate at "
           f"every round's budget and sizes): {run.spent / spec.full_grid():.0%}.", "",
           "| round | C | candidates | advanced | dropped for the allowance |", "|---|---|---|---|---|"]
    for rec in trace.rounds:
        dropped = ", ".join(trace.unaffordable.get(rec.index + 1, [])) or "-"
        out.append(f"| {rec.index + 1} | {rec.flops:.3g} | {len(rec.candidates)} | {', '.join(rec.advanced) or '-'} | "
                   f"{dropped} |")
    out += ["", "## Candidates", "",
            "Loss advantage: log L*_dense(C) - log L*(C) in percent, at the compute-optimal size (pooled fit, "
            f"{spec.replicates} bootstrap replicates, 95% interval); larger is better, the search decides on it. "
            "Multiplier: compute dense needs for the candidate's loss over the candidate's compute, from the same "
            "fit. `last round` is the candidate's own latest round; `final fit` reads every candidate at the last "
            "round's budget from the last pooled fit (extrapolated for those dropped earlier).", "",
            "| candidate | (omega, psi, nu) | LR | rounds | last round | final fit: advantage | final fit: multiplier "
            "| sizes |",
            "|---|---|---|---|---|---|---|---|"]
    order = sorted(spec.candidates, key=lambda c: -(pooled[c.label][0].value if c.label in pooled else -math.inf))
    for c in order:
        rounds = [rec.index + 1 for rec in trace.rounds if c.label in rec.candidates]
        lr = run.lrs.get(c.label)
        lr_text = "own" if lr is None or lr.lr is None else f"{lr.lr:g} ({lr.source})"
        mine = last.get(c.label)
        sizes = "; ".join(f"r{i + 1} {run.sizing[(c.label, i)]}: {' '.join(map(str, w))}"
                          for (lab, i), w in sorted(run.widths.items(), key=lambda kv: kv[0][1]) if lab == c.label)
        fit = pooled.get(c.label)
        out.append(f"| {c.label} | {_coords(c.coords)} | {lr_text} | {' '.join(map(str, rounds))} | "
                   f"{_pct(mine[1]) if mine else '-'} | {_pct(fit[0]) if fit else '-'} | "
                   f"{_fmt(fit[1]) if fit else '-'} | {sizes} |")
    checked = {lab: ch for lab, ch in run.lrs.items() if ch.losses}
    if checked:
        out += ["", "## LR check", "", f"At C = {spec.stages[0].flops:.3g}, one size each; final validation loss:", "",
                "| candidate | " + " | ".join(f"lr {v:g}" for v in spec.lr_values) + " | chosen |",
                "|---|" + "---|" * (len(spec.lr_values) + 1)]
        for lab, ch in checked.items():
            edge = ch.lr is not None and ch.lr in (min(spec.lr_values), max(spec.lr_values))
            chosen = f"{ch.lr if ch.lr is not None else 'none'}{' (at the edge of the range)' if edge else ''}"
            out.append(f"| {lab} | " + " | ".join(f"{ch.losses.get(v, float('nan')):.4g}" for v in spec.lr_values)
                       + f" | {chosen} |")
    if any(c.coords is not None for c in spec.candidates):
        out += ["", "![loss advantage over omega, psi, nu](plots/taxonomy.png)"]
    out += ["",
            "The full analysis of every round's runs (frontiers, isoFLOP fits, per-run table, curves) is in "
            "[analysis/report.md](analysis/report.md).", ""]
    return "\n".join(out)


def taxonomy_plot(run: SearchRun, stem: Path) -> Path:
    """Each theta candidate's final-fit loss advantage (with its interval) over omega, psi and nu; winners filled."""
    pooled = final_fit(run)
    rows = [(c.coords, pooled[c.label][0], c.label in run.trace.winners) for c in run.spec.candidates
            if c.coords is not None and c.label in pooled]
    fig = Figure(figsize=(12, 3.8))
    axes = fig.subplots(1, 3, sharey=True)
    for k, (ax, name) in enumerate(zip(axes, ("omega", "psi", "nu"))):
        for coords, iv, won in rows:
            lo, hi = (iv.lo, iv.hi) if np.isfinite(iv.lo) and np.isfinite(iv.hi) else (iv.value, iv.value)
            ax.errorbar([coords[k]], [100 * iv.value], yerr=[[100 * (iv.value - lo)], [100 * (hi - iv.value)]],
                        fmt="o", color="C3" if won else "C0", mfc="C3" if won else "none", capsize=3)
        ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(name)
    axes[0].set_ylabel("loss advantage over dense, % of log loss")
    fig.suptitle(f"{run.spec.name}: loss advantage at C = {run.trace.rounds[-1].flops:.3g} (filled: winner set; "
                 "above 0: below dense's loss)")
    fig.tight_layout()
    stem.parent.mkdir(parents=True, exist_ok=True)
    path = stem.with_suffix(".png")
    fig.savefig(path, dpi=120)
    return path


def search_dict(run: SearchRun) -> dict:
    trace = run.trace
    return {"name": run.spec.name, "budget": run.spec.budget, "allowance": run.spec.allowance,
            "spent": run.spent, "full_grid": run.spec.full_grid(), "reached_final": trace.reached_final,
            "winners": trace.winners, "sweeps": run.sweeps,
            "rounds": [{"round": r.index + 1, "flops": r.flops, "candidates": r.candidates, "advanced": r.advanced,
                        "loss_advantage": {k: v.to_dict() for k, v in r.scores.items()}, "cost": r.cost}
                       for r in trace.rounds],
            "unaffordable": {str(k + 1): v for k, v in trace.unaffordable.items()},
            "final_fit": {k: {"loss_advantage": a.to_dict(), "multiplier": m.to_dict()}
                          for k, (a, m) in final_fit(run).items()},
            "candidates": {c.label: {"overrides": c.overrides, "theta": c.theta, "coords": c.coords,
                                     "lr": None if c.label not in run.lrs else run.lrs[c.label].lr,
                                     "lr_source": run.lrs[c.label].source if c.label in run.lrs else "own"}
                           for c in run.spec.candidates}}


def write_search_report(run: SearchRun, out: str | Path, workers: int | None = None) -> Path:
    """search.md, search.json, plots/taxonomy.png and analysis/ (the full report of every round) under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if run.report is not None:
        write_report(run.report, out / "analysis", workers)
    if any(c.coords is not None for c in run.spec.candidates):
        taxonomy_plot(run, out / "plots" / "taxonomy")
    (out / "search.json").write_text(json.dumps(plain(search_dict(run)), indent=2, allow_nan=False) + "\n")
    path = out / "search.md"
    path.write_text(markdown(run))
    return path

