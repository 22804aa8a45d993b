"""The report as Markdown, and the figures each experiment's results support.

The report opens with a verdict per label that cites only fits with status ok; its headline per experiment cites
the pooled compute multipliers (one joint fit of every label) of the model the data support. Every table shows a
weak fit's numbers marked `(weak)` and a failed fit greyed, with its reason instead of numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.report import plots
from analysis.fit.bootstrap import Interval
from analysis.fit.inputs import CONFIG_COLS, HPARAM_COLS, fixed_epoch_points, frontier_curves, seed_noise, wall_curves
from analysis.fit.isoflop import DEFAULT_BUDGET_TOLERANCE, assign_budgets
from analysis.io.load import RunTable
from analysis.io.metric import METRIC_NAMES
from analysis.fit.lr_transfer import CLEAR_SLOPE, NOT_TESTED, lr_curves
from analysis.report.build import DENSE, ExperimentResult, Report, StructureResult, exponent_fits

EXCLUDED_SHOWN = 30


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _iv(iv: Interval | None, spec: str = ".3g") -> str:
    return "–" if iv is None else iv.fmt(spec)


def _grey(text: str) -> str:
    return f'<span style="color:gray">{text.replace("|", "/")}</span>'


def _cell(s: StructureResult, fit: str, text: str) -> str:
    """`text` for an ok fit, `text (weak)` for a weak one, the first reason greyed for a failed one (the Fit status
    table lists them all)."""
    st = s.status.get(fit)
    if st is None:
        return "–"
    if st.status == "failed":
        more = f" (+{len(st.reasons) - 1} more, see Fit status)" if len(st.reasons) > 1 else ""
        return _grey(f"failed: {st.reasons[0]}{more}" if st.reasons else "failed")
    return f"{text} (weak)" if st.status == "weak" else text


def _once(row: list) -> list[str]:
    """A row with a failed fit's greyed reason shown in its first cell only (the others of that fit: `–`)."""
    seen: set[str] = set()
    out = []
    for cell in map(str, row):
        out.append("–" if cell.startswith('<span style="color:gray">') and cell in seen else cell)
        seen.add(cell)
    return out


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_once(row)) + " |" for row in rows]
    return lines + [""]


def taxonomy_rows(structures: dict[str, StructureResult]) -> pd.DataFrame:
    """The taxonomy plot's points: the labels whose exponent enters the trends (build.exponent_fits), no others."""
    return pd.DataFrame([{"label": s.label, "omega": s.omega, "psi": s.psi, "nu": s.nu,
                          "alpha": s.frontier.params["alpha"].value, "lo": s.frontier.params["alpha"].lo,
                          "hi": s.frontier.params["alpha"].hi}
                         for s in exponent_fits(structures).values() if s.omega is not None],
                        columns=["label", "omega", "psi", "nu", "alpha", "lo", "hi"])


def plot_jobs(exp: ExperimentResult, table: RunTable, plot_dir: Path) -> list[tuple[str, tuple]]:
    """(figure name, (plot function, *arguments)) for every figure this experiment's results support."""
    runs = table.runs[table.runs["experiment"] == exp.name]
    stem = plot_dir / _slug(exp.title)
    structures, title = exp.structures, exp.title
    widths = dict(zip(runs["run_id"], runs["width"]))
    unit = plots.loss_unit(runs["family"].iloc[0] if len(runs) else None)
    loss = plots.LOSS_NAMES[exp.metric]

    def having(attr: str, status: str) -> frozenset[str]:
        return frozenset(lab for lab, s in structures.items() if s.status.get(attr) and s.status[attr].status == status)

    jobs: list[tuple[str, tuple]] = []
    for kind, attr, cv in (("FLOPs", "frontier", frontier_curves), ("seconds", "wall_frontier", wall_curves)):
        fits = {lab: getattr(s, attr) for lab, s in structures.items() if getattr(s, attr) is not None}
        failed = {lab for lab in fits if structures[lab].status[attr].status == "failed"}
        if fits:
            jobs.append((f"loss frontiers ({kind})", (plots.frontiers, fits, failed, kind, title,
                                                      Path(f"{stem}_frontiers_{attr}"), having(attr, "weak"), unit,
                                                      loss)))
        curves = {lab: cv(table, runs[runs["label"] == lab]) for lab in structures}
        dense = DENSE if DENSE in fits else None
        if any(len(c) for c in curves.values()):  # runs without recorded seconds have no wall-clock curves
            jobs.append((f"loss vs {kind}", (plots.loss_curves, curves, fits, failed, widths, dense, kind, title,
                                             Path(f"{stem}_loss_vs_{attr}"), having(attr, "weak"), unit, loss)))
    mult = {lab: s.frontier for lab, s in structures.items() if s.frontier is not None}
    if exp.reference_flops is not None and len(mult) > 1:
        statuses = {lab: s.status["multiplier"].status for lab, s in structures.items() if "multiplier" in s.status}
        pooled = {lab: exp.pooled.multiplier(lab) for lab in exp.pooled.labels} if exp.pooled else {}
        at = exp.pooled.reference_flops if exp.pooled else None
        jobs.append(("compute multiplier", (plots.multipliers, mult, DENSE, title, Path(f"{stem}_multiplier"),
                                            statuses, pooled, at)))
    p = exp.pooled
    if p is not None and p.protocol == "fixed_epochs":
        mults = {lab: p.multiplier(lab) for lab in p.labels}
        jobs.append(("fixed-epoch curves", (plots.fixed_epoch_curves, fixed_epoch_points(runs), p.curves[p.model],
                                            mults, p.model, title, Path(f"{stem}_fixed_epochs"), unit, loss)))
    iso = {lab: s.isoflop for lab, s in structures.items() if s.isoflop is not None}
    if iso:
        jobs.append(("isoFLOP curves", (plots.isoflop_curves, iso, title, Path(f"{stem}_isoflop"),
                                        having("isoflop", "weak"), unit, loss)))
        jobs.append(("N*(C)", (plots.optimal_size, iso, title, Path(f"{stem}_nstar"))))
    if exp.trends:
        rows = taxonomy_rows(structures)
        jobs.append(("Einsum taxonomy", (plots.taxonomy, rows, title, Path(f"{stem}_taxonomy"))))
    if len(exp.lr_sweeps):
        jobs.append(("LR sweeps", (plots.lr_sweeps, lr_curves(runs), exp.lr_sweeps, title,
                                   Path(f"{stem}_lr_sweeps"))))
        jobs.append(("LR vs width", (plots.lr_vs_width, exp.lr_sweeps, title, Path(f"{stem}_lr_vs_width"))))
    return jobs


def _figures(figures: dict[str, Path], names: tuple[str, ...], out: Path) -> list[str]:
    lines = [f"![{n}]({figures[n].relative_to(out).as_posix()})" for n in names if n in figures]
    return lines + [""] if lines else []


def _pooled_model(exp: ExperimentResult) -> str:
    p = exp.pooled
    name = "a shared exponent" if p.model == "shared" else "per-label exponents"
    return f"pooled fit, {name}: the test of per-label exponents gives p = {p.p_value:.2g}"


def headline(exp: ExperimentResult) -> str:
    """One plain sentence per experiment: which label wins per FLOP against the reference, citing only ok
    multipliers: the pooled fit's (of the model the data support) where there is one, else each frontier's."""
    pooled = exp.pooled
    ref = pooled.reference if pooled else DENSE
    key = "pooled" if pooled else "multiplier"
    said, unsure = [], []
    for s in exp.structures.values():
        if s.label == ref:
            continue
        status = s.status.get(key)
        m = pooled.multiplier(s.label) if pooled else s.multiplier
        if m is None or status is None or not status.ok:
            unsure.append(f"{s.label} ({status.status if status else 'no fit'})")
            continue
        if m.lo > 1:
            said.append(f"{s.label} beats {ref} per FLOP: it reaches {ref}'s loss with {m.value:.3g}x less compute "
                        f"({_iv(m)})")
        elif m.hi < 1:
            said.append(f"{s.label} is behind {ref} per FLOP: it needs {1 / m.value:.3g}x more compute for {ref}'s "
                        f"loss (multiplier {_iv(m)})")
        else:
            said.append(f"{s.label} and {ref} cannot be told apart per FLOP (multiplier {_iv(m)} includes 1)")
    flops = pooled.reference_flops if pooled else exp.reference_flops
    if flops is None:
        return "No dense frontier: nothing is compared per FLOP."
    where = f"At C = {flops:.3g} FLOPs ({_pooled_model(exp)}): " if pooled else f"At C = {flops:.3g} FLOPs: "
    if not said:
        return (where + "the evidence is too weak to say which label wins per FLOP: no compute multiplier vs "
                f"{ref} has status ok ({', '.join(unsure) or 'none fitted'}; see Fit status).")
    tail = f" Too weak to cite: {', '.join(unsure)}." if unsure else ""
    return where + "; ".join(said) + "." + tail


def transfer_lines(exp: ExperimentResult) -> list[str]:
    """Per structure swept under both parametrizations: does the optimal LR drift less structure-aware, with
    confidence (the gap's bootstrap interval, analysis.fit.lr_transfer)?"""
    lines = []
    for r in exp.transfer.itertuples():
        slopes = (f"- **{r.structure}**: slope of log2 lr* vs log2 width {r.slope_structure_aware:+.2f} "
                  f"structure-aware, {r.slope_naive:+.2f} naive; gap |naive| - |structure-aware| = ")
        if r.verdict == NOT_TESTED:
            lines.append(slopes + f"{r.gap:.2f}; {NOT_TESTED} (no repeated seeds; give --loss-noise).")
            continue
        meaning = {"reproduced": "structure-aware drifts less", "not reproduced": "naive drifts less",
                   "not resolved": "the interval includes 0"}[r.verdict]
        lines.append(slopes + f"{r.gap:.2f} [{r.gap_lo:.2f}, {r.gap_hi:.2f}] ({r.level:.0%}, {r.replicates} "
                     f"replicates, {r.noise}), P(gap > {CLEAR_SLOPE}) = {r.p_clear:.2f}: **{r.verdict}** "
                     f"({meaning}).")
    return lines


def verdict(exp: ExperimentResult) -> list[str]:
    """One line per label citing only its ok fits (and comparisons between two ok fits)."""
    lines = []
    for s in exp.structures.values():
        said = []
        if s.status.get("pooled") and s.status["pooled"].ok:
            said.append(f"pooled compute multiplier vs {exp.pooled.reference} ({exp.pooled.model} exponent, "
                        f"C = {exp.pooled.reference_flops:.3g}) = {_iv(exp.pooled.multiplier(s.label))}")
        if s.status.get("frontier") and s.status["frontier"].ok:
            said.append(f"loss frontier L - E ~ C^-alpha with alpha = {_iv(s.frontier.params['alpha'])}")
        if s.status.get("isoflop") and s.status["isoflop"].ok:
            said.append(f"compute-optimal size N* ~ C^a with a = {_iv(s.isoflop.a)}")
        if s.status.get("parametric") and s.status["parametric"].ok:
            said.append(f"parametric a = beta/(alpha+beta) = {_iv(s.parametric.params['a'])}")
        if s.status.get("multiplier") and s.status["multiplier"].ok:
            said.append(f"compute multiplier vs {DENSE} (dense FLOPs / this label's FLOPs at matched loss, "
                        f"C = {exp.reference_flops:.3g}) = {_iv(s.multiplier)}")
        if s.status.get("wall_multiplier") and s.status["wall_multiplier"].ok:
            said.append(f"training-time multiplier vs {DENSE} = {_iv(s.wall_multiplier)}")
        not_ok = [f"{fit} {st.status}" for fit, st in s.status.items() if not st.ok]
        tail = f" Not cited: {', '.join(not_ok)} (see Fit status)." if not_ok else ""
        body = "; ".join(said) + "." if said else "no fit has status ok."
        lines.append(f"- **{s.label}** ({s.runs} runs): {body}{tail}")
    return lines


def verdict_text(report: Report) -> list[str]:
    """The verdict as plain lines for a terminal: per experiment its headline, each label's line and fit statuses."""
    lines = ["", "Verdict (only fits with status ok are cited):"]
    for exp in report.experiments:
        lines += [f"{exp.title}", f"  {headline(exp)}"]
        lines += ["  " + line.replace("**", "") for line in verdict(exp) + transfer_lines(exp)]
        statuses = [f"{s.label} {fit} {st.status}" for s in exp.structures.values() for fit, st in s.status.items()]
        lines.append(f"  fit statuses: {', '.join(statuses)}")
    return lines + [""]


def _status_table(exp: ExperimentResult) -> list[str]:
    rows = [[s.label, fit, st.status, "; ".join(st.reasons) or "–"]
            for s in exp.structures.values() for fit, st in s.status.items()]
    return ["### Fit status", "", "ok: cited in the verdict; weak: numbers shown, not cited; failed: no numbers "
            "(the reason instead).", ""] + _md_table(["label", "fit", "status", "reasons"], rows)


def _pooled_table(exp: ExperimentResult) -> list[str]:
    """Every label's pooled multiplier under the supported model first, then both models side by side."""
    p = exp.pooled
    if p is None:
        return []
    design = ("One fit of all labels' reads (every run at every budget it passes): per label an isoFLOP parabola in "
              "log N around its optimum, whose minimum is L*(C) = E + A (k C)^-alpha with one shape for all labels "
              "and a multiplier k per label (shared exponent), or E + A_l C^-alpha_l (per-label exponents).")
    if p.protocol == "fixed_epochs":
        design = ("Fixed-epoch protocol (CBS's MLP comparison): every width trained the same epochs, so each run at "
                  "its label's sweep LR is one point (training FLOPs, final loss) of its label's loss-vs-compute "
                  "curve, and one fit of all labels' points gives L(C) = E + A (k C)^-alpha with one shape for all "
                  "labels and a multiplier k per label, the horizontal shift between the curves (shared exponent), "
                  "or E + A_l C^-alpha_l (per-label exponents). This is not an isoFLOP multiplier: each width is "
                  "trained for the same epochs, not to its compute-optimal length.")
    reads = "" if p.protocol == "fixed_epochs" else f", correlation {p.correlation:.2f} between two reads of a run"
    lines = ["### Compute multipliers (pooled fit)", "",
             f"{design} The "
             f"multiplier is how many times more compute {p.reference} needs for the label's loss at C = "
             f"{p.reference_flops:.3g}. Per-label exponents against a shared one: likelihood ratio "
             f"{p.lr_statistic:.3g}, p = {p.p_value:.2g} from {p.replicates} bootstrap replicates under the shared "
             f"fit; the data support "
             f"**{'a shared exponent' if p.model == 'shared' else 'per-label exponents'}** (shared unless p < 0.05), "
             f"cited below. Shared alpha = {_iv(p.alpha)}. Bootstrap: every run redrawn whole as another seed "
             f"would be (noise {p.sigma:.3g} in log loss{reads}), bias-corrected percentile intervals. Status: ok "
             "when hi/lo <= 2.5 and the interval holds its point.", ""]
    rows = []
    for label, r in p.labels.items():
        m = p.multiplier(label)
        st = exp.structures[label].status.get("pooled")
        width = f"{m.hi / m.lo:.3g}" if label != p.reference and m.lo > 0 else "–"
        rows.append([label, r.runs, "1 (reference)" if label == p.reference else _iv(m), width,
                     st.text() if st else "reference", _iv(r.multiplier), _iv(r.multiplier_per_label),
                     _iv(r.alpha_per_label)])
    lines += _md_table(["label", "runs", f"multiplier at C = {p.reference_flops:.3g} ({p.model})", "hi/lo", "status",
                        "shared-exponent model", "per-label model", "per-label alpha"], rows)
    return lines + [f"- {n}" for n in p.notes] + ([""] if p.notes else [])


def _frontier_table(exp: ExperimentResult, attr: str, unit: str) -> list[str]:
    mult_key = "multiplier" if attr == "frontier" else "wall_multiplier"
    rows = []
    for s in exp.structures.values():
        f = getattr(s, attr)
        mult = getattr(s, mult_key)
        if f is None:
            rows.append([s.label, s.runs, _cell(s, attr, ""), "–", "–", "–", "–"])
            continue
        rows.append([s.label, s.runs, _cell(s, attr, _iv(f.params["alpha"])), _cell(s, attr, _iv(f.params["E"])),
                     _cell(s, attr, f"{f.params['A'].value:.3g}"),
                     _cell(s, mult_key, _iv(mult)) if mult is not None else "–",
                     f"{f.noise.sigma:.4g} ({f.noise.source})"])
    ref = "dense's largest run" if unit == "seconds" else (
        f"C = {exp.reference_flops:.3g}" if exp.reference_flops else "dense's largest budget")
    what = "compute" if unit == "FLOPs" else "training time"
    return _md_table(["label", "runs", "alpha", "E", "A", f"{what} multiplier vs {DENSE} at {ref}", "noise"], rows)


def _minima_table(structures: dict[str, StructureResult]) -> list[str]:
    """Per label and budget, whether the isoFLOP minimum is interior (a measured size on each side of it has a
    higher loss than the lowest measured one): only interior minima enter N* ~ C^a."""
    rows = []
    for s in structures.values():
        if s.isoflop is None:
            continue
        for r in s.isoflop.budgets.itertuples():
            nstar = "–" if not np.isfinite(r.n_star) else f"{r.n_star:.3g} [{r.n_star_lo:.3g}, {r.n_star_hi:.3g}]"
            interior = "yes" if r.used else ("no" if np.isfinite(r.n_star) else "–")
            rows.append([s.label, f"{r.flops:.3g}", r.points, nstar, interior, r.note])
    if not rows:
        return []
    return ["Minimum per budget: interior means a measured size on each side of the minimum has a higher loss "
            "than the lowest measured one (judged on the measurements, not the interpolant; any other minimum is "
            "dropped from the fit; centre that budget's sizes on N*).", "",
            *_md_table(["label", "C", "sizes", "N*_eff", "interior", "note"], rows)]


def best_final_losses(runs: pd.DataFrame) -> pd.DataFrame:
    """Per label, at the experiment's largest FLOP budget: the lowest over configurations (size and setting) of
    their seed-mean final loss, so one-seed and several-seed labels are compared alike, with that config's width
    and seeds, the seeds per config of the label (min and max) and the mean's 1 sd, L sigma / sqrt(seeds)."""
    budget = assign_budgets(runs["flops"].to_numpy(float), DEFAULT_BUDGET_TOLERANCE)
    top = runs[np.isclose(budget, budget.max(), rtol=1e-9)]
    noise = seed_noise(runs)
    configs = top.groupby(list(CONFIG_COLS + HPARAM_COLS), dropna=False, sort=False).agg(
        loss=("final_val_loss", "mean"), seeds=("run_id", "size")).reset_index()
    rows = []
    for label, g in configs.groupby("label", sort=False):
        best = g.loc[g["loss"].idxmin()]
        sd = best["loss"] * noise.sigma / np.sqrt(best["seeds"]) if noise is not None else np.nan
        rows.append({"label": label, "flops": float(budget.max()), "loss": float(best["loss"]), "width": best["width"],
                     "seeds": int(best["seeds"]), "seeds_min": int(g["seeds"].min()),
                     "seeds_max": int(g["seeds"].max()), "sd": float(sd)})
    return pd.DataFrame(rows)


def _loss_star(s: StructureResult | None, flops: float) -> str:
    """The isoFLOP fit's minimum loss L*(C) at the budget nearest `flops` (within 10%), or `–`."""
    if s is None or s.isoflop is None:
        return "–"
    b = s.isoflop.budgets
    near = b[np.isclose(b["flops"], flops, rtol=DEFAULT_BUDGET_TOLERANCE) & np.isfinite(b["loss_star"])]
    return "–" if near.empty else _cell(s, "isoflop", f"{near['loss_star'].iloc[0]:.4g}")


def _best_final_table(exp: ExperimentResult, runs: pd.DataFrame) -> list[str]:
    best = best_final_losses(runs)
    if best.empty:
        return []
    flops = float(best["flops"].iloc[0])
    rows = [[r.label, f"{r.loss:.4g}", r.width, r.seeds,
             f"{r.seeds_min}" if r.seeds_min == r.seeds_max else f"{r.seeds_min}-{r.seeds_max}",
             "–" if not np.isfinite(r.sd) else f"{r.sd:.2g}", _loss_star(exp.structures.get(r.label), flops)]
            for r in best.itertuples()]
    return [f"### Best final loss at C = {flops:.3g}", "",
            "Each configuration's final loss is averaged over its seeds first; the best is the lowest of those "
            "means over sizes and settings (a minimum over single seeds would favour labels with more runs). The "
            "lowest of several noisy means still sits below the true minimum; the isoFLOP minimum L* uses every "
            "size.", "",
            *_md_table(["label", "best seed-mean final loss", "width", "seeds (that config)", "seeds per config",
                        "1 sd of that mean", "isoFLOP L*"], rows)]


# Where the papers measured the claims a family's experiments test (docs/results.md, shared/reference/structures.md)
PAPER_SCALE = {
    "gpt2": "the papers' GPT-2 results sit at about 1e17-1e20 training FLOPs (CBS) and 1e16-1e19 (Einsum search)",
    "mlp": "CBS's MLP result (CIFAR-10/100, 500 epochs, every layer but the last structured) implies BTT about 4x "
           "more compute-efficient at 1e5-1e6 multiply-adds per example",
    "vit": "CBS's ViT result is ImageNet ViT-S/32 (BTT matches dense with 3.8x less compute)",
}


def scale_note(family: str | None, runs: pd.DataFrame) -> str:
    """This experiment's compute beside the papers' for its family, and what 'not reproduced' can mean here."""
    flops = runs["flops"].to_numpy(float) if "flops" in runs else np.array([])
    lo, hi = (f"{flops.min():.2g}", f"{flops.max():.2g}") if flops.size else ("", "")
    here = "These runs" if not flops.size else \
        f"These runs train with {lo}-{hi} FLOPs" if lo != hi else f"These runs train with {lo} FLOPs each"
    n_eff = runs["n_eff"].to_numpy(float) if "n_eff" in runs else np.array([])
    if n_eff.size:
        here += f" at {n_eff.min():.2g}-{n_eff.max():.2g} effective parameters"
    paper = PAPER_SCALE.get(str(family))
    if paper is None:
        return f"Scale: {here}."
    return (f"Scale: {here}; {paper}. A result \"not reproduced\" here says the effect is absent at this scale, "
            "not that it is absent at the papers'.")


def _experiment_markdown(exp: ExperimentResult, runs: pd.DataFrame, figures: dict[str, Path], out: Path,
                         level: float) -> list[str]:
    structures = exp.structures
    lines = [f"## `{exp.title}`", "", f"{sum(s.runs for s in structures.values())} runs, {len(structures)} labels. "
             f"Intervals are {level:.0%} bootstrap percentile intervals. Loss: {METRIC_NAMES[exp.metric]}"
             f"{'; protocol: fixed epochs' if exp.protocol == 'fixed_epochs' else ''}.", "",
             scale_note(runs["family"].iloc[0] if len(runs) else None, runs), ""]
    lines += _md_table(["label", "structure", "runs", "params (raw)", "N_eff"],
                       [[s.label, s.structure, s.runs, f"{s.params_range[0]:.3g}–{s.params_range[1]:.3g}",
                         f"{s.n_eff_range[0]:.3g}–{s.n_eff_range[1]:.3g}"] for s in structures.values()])
    lines += [f"- {n}" for n in exp.notes] + ([""] if exp.notes else [])
    lines += _pooled_table(exp)
    lines += _status_table(exp)
    lines += _best_final_table(exp, runs)

    lines += ["### Loss frontier (approach 1): L(C) = E + A C^-alpha, C in training FLOPs", ""]
    lines += _frontier_table(exp, "frontier", "FLOPs")
    lines += _figures(figures, ("fixed-epoch curves", "loss frontiers (FLOPs)", "loss vs FLOPs",
                                "compute multiplier"), out)
    lines += ["### Wall-clock frontier: the same fit against measured training seconds", "",
              "What a FLOP advantage is worth on the hardware the runs used (evaluation time excluded only as far "
              "as the trainer's wall_s excludes it).", ""]
    lines += _frontier_table(exp, "wall_frontier", "seconds")
    lines += _figures(figures, ("loss frontiers (seconds)", "loss vs seconds"), out)

    lines += ["### IsoFLOP optima (approach 2): N* ~ C^a, D* ~ C^b", "",
              "Every run's curve is read at every budget it passes (log-log interpolation); per budget and size the "
              "best hyperparameter setting is kept and only seeds are averaged.", ""]
    rows = []
    for s in structures.values():
        f = s.isoflop
        if f is None:
            rows.append([s.label, _cell(s, "isoflop", ""), "–", "–", "–", "–", "–"])
            continue
        used = f.budgets[f.budgets["used"]]
        top = used.iloc[-1]
        nstar = f"{top['n_star']:.3g} [{top['n_star_lo']:.3g}, {top['n_star_hi']:.3g}] at C = {top['flops']:.3g}"
        rows.append([s.label, len(used), len(f.budgets) - len(used), _cell(s, "isoflop", _iv(f.a)),
                     _cell(s, "isoflop", _iv(f.b)), _cell(s, "isoflop", nstar), f.noise.source])
    lines += _md_table(["label", "budgets used", "budgets dropped", "a", "b", "N*_eff (largest used budget)",
                        "noise from"], rows)
    lines += _minima_table(structures)
    lines += _figures(figures, ("isoFLOP curves", "N*(C)"), out)

    lines += ["### Parametric fit (approach 3): L(N, D) = E + A/N^alpha + B/D^beta", "",
              "N is the effective parameter count (training FLOPs per token / 6); a = beta/(alpha+beta) is the "
              "exponent of the compute-optimal N_opt ~ C^a.", ""]
    rows = []
    for s in structures.values():
        p = s.parametric
        if p is None:
            rows.append([s.label, "–", _cell(s, "parametric", "")] + ["–"] * 5)
            continue
        rows.append([s.label, p.n_points] + [_cell(s, "parametric", _iv(p.params[k]))
                                             for k in ("E", "A", "B", "alpha", "beta", "a")])
    lines += _md_table(["label", "runs", "E", "A", "B", "alpha", "beta", "a = beta/(alpha+beta)"], rows)

    lines += ["### Extrapolation check (largest budgets held out)", "",
              "Refit without the largest 1 or 2 budgets; the interval is for the held-out measurement (the refit's "
              "bootstrap predictions with that measurement's own noise).", ""]
    rows = []
    for s in structures.values():
        for r in s.holdout.itertuples():
            what = "L*(C)" if r.fit == "frontier" else "N*(C)"
            pred = "–" if not np.isfinite(r.predicted) else f"{r.predicted:.4g} [{r.lo:.4g}, {r.hi:.4g}]"
            inside = "uninformative" if pd.notna(r.informative) and not r.informative else (
                "–" if r.inside is None else ("yes" if r.inside else "no"))
            err = "–" if not np.isfinite(r.rel_error) else f"{r.rel_error:+.1%}"
            obs = "–" if not np.isfinite(r.observed) else f"{r.observed:.4g}"
            rows.append([s.label, what, r.held_out, f"{r.flops:.3g}", pred, obs, err, inside, r.note])
    lines += _md_table(["label", "quantity", "budgets held out", "C", "predicted", "observed", "error",
                        "inside interval", "note"], rows) if rows else ["No fit to check.", ""]

    if exp.trends:
        lines += ["### Einsum taxonomy: frontier exponent vs (omega, psi, nu)", ""]
        rows = [[s.label, f"{s.omega:.3g}", f"{s.psi:.3g}", f"{s.nu:.3g}",
                 _cell(s, "frontier", _iv(s.frontier.params["alpha"]))]
                for s in structures.values() if s.omega is not None and s.frontier is not None]
        lines += _md_table(["label", "omega", "psi", "nu", "alpha"], rows)
        lines += ["Slopes over the labels whose frontier fit did not fail (a coordinate on which they do not differ "
                  "has no slope); a weak exponent makes its slope weak too.", ""]
        lines += _md_table(["coordinate", "d alpha / d coordinate", "labels"],
                           [[t.coordinate, _iv(t.slope), t.structures] for t in exp.trends])
        lines += _figures(figures, ("Einsum taxonomy",), out)

    if len(exp.lr_sweeps):
        lines += ["### Learning-rate transfer", ""]
        rows = []
        drift = {(r.label, r.parametrization): r for r in exp.lr_drift.itertuples()}
        for (label, param), sw in exp.lr_sweeps.groupby(["label", "parametrization"], sort=False):
            sw = sw.sort_values("width")
            per_width = ", ".join(f"{w:g}: {lr:.3g}{'*' if e else ''}" for w, lr, e in
                                  zip(sw["width"], sw["lr_star"], sw["at_edge"]))
            r = drift.get((label, param))  # none for a label swept at one width (an LR check)
            rows.append([label, param, per_width, "–" if r is None else f"{r.factor_per_doubling:.3g}x",
                         "–" if r is None else f"{r.lr_star_max / r.lr_star_min:.3g}x"])
        lines += _md_table(["label", "parametrization", "lr* per width (* = sweep edge)",
                            "lr* change per width doubling", "lr* max/min"], rows)
        transfer = transfer_lines(exp)
        lines += transfer + [""] if transfer else []
        lines += _figures(figures, ("LR vs width", "LR sweeps"), out)

    notes = [(s.label, n) for s in structures.values() for n in s.notes]
    notes += [(s.label, f"{fit}: {n}") for s in structures.values() for fit in ("frontier", "isoflop", "parametric")
              if getattr(s, fit) is not None for n in getattr(s, fit).notes]
    if notes:
        lines += ["### Notes", ""] + [f"- {lab}: {msg}" for lab, msg in notes] + [""]
    return lines


def side_by_side(report: Report) -> list[str]:
    """Labels of one experiment in two or more sweeps, their ok-or-marked headline numbers in adjacent columns."""
    by_name: dict[str, list[ExperimentResult]] = {}
    for exp in report.experiments:
        by_name.setdefault(exp.name, []).append(exp)
    lines = []
    for name, exps in by_name.items():
        if len(exps) < 2:
            continue
        labels = list(dict.fromkeys(lab for e in exps for lab in e.structures))
        header = ["label"] + [f"{e.sweep}: {what}" for e in exps for what in ("alpha", "a", "multiplier")]
        rows = []
        for lab in labels:
            row = [lab]
            for e in exps:
                s = e.structures.get(lab)
                if s is None:
                    row += ["–", "–", "–"]
                    continue
                alpha = _iv(s.frontier.params["alpha"]) if s.frontier else ""
                a = _iv(s.isoflop.a) if s.isoflop else ""
                row += [_cell(s, "frontier", alpha), _cell(s, "isoflop", a),
                        _cell(s, "multiplier", _iv(s.multiplier)) if s.multiplier else "–"]
            rows.append(row)
        lines += [f"### `{name}` in {len(exps)} sweeps", ""] + _md_table(header, rows)
    return (["## Sweeps side by side", ""] + lines) if lines else []


def markdown(report: Report, figures: dict[str, dict[str, Path]], out: Path) -> str:
    excluded = sum(len(t.excluded) for t in report.tables.values())
    sweeps = [s for s in report.tables if s is not None]
    scope = f"Sweeps: {', '.join(f'`{s}`' for s in sweeps)}. " if sweeps else ""
    lines = ["# Scaling-law report", "", f"Source: `{report.source}`. {scope}{report.runs_used} runs used, "
             f"{excluded} excluded. Bootstrap: {report.replicates} replicates per fit, seed {report.seed}.", "",
             "## Verdict", "", "Only fits with status ok are cited (see each experiment's Fit status).", ""]
    for exp in report.experiments:
        lines += [f"`{exp.title}`", "", f"**{headline(exp)}**", ""] + verdict(exp) + transfer_lines(exp) + [""]
    lines += side_by_side(report)
    for exp in report.experiments:
        runs = report.tables[exp.sweep].runs
        lines += _experiment_markdown(exp, runs[runs["experiment"] == exp.name], figures.get(exp.title, {}), out,
                                      report.level)
    if report.coordchecks:
        lines += ["## Coordinate checks", "", "Activation-update size per layer against width, from "
                  f"`python -m scaling.coordcheck` ({', '.join(report.coordchecks)}).", ""]
        lines += _figures(figures.get("", {}), ("coordinate checks",), out)
    lines += ["## Excluded runs", ""]
    frames = [t.excluded.assign(sweep=s) for s, t in report.tables.items() if len(t.excluded)]
    if not frames:
        lines += ["None.", ""]
    else:
        shown = pd.concat(frames).drop_duplicates("run_id")
        lines += _md_table(["run", "status", "reason"],
                           [[r.run_id, r.status, r.reason] for r in shown.head(EXCLUDED_SHOWN).itertuples()])
        if len(shown) > EXCLUDED_SHOWN:
            lines += [f"... and {len(shown) - EXCLUDED_SHOWN} more: see excluded.csv", ""]
    return "\n".join(lines)
