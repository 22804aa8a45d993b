"""Coverage of the pooled fit's intervals in the regime this project runs: simulated sweeps with known truth.

A cell is (decades of budgets, seeds per config). Each sweep draws, per label, isoFLOP runs from
analysis.io.synthetic's HOFFMANN law with a known compute multiplier k_l (the label's law is dense's with A and
B times k^-alpha*, alpha* = alpha beta / (alpha + beta), so its frontier is L*_dense(k C) exactly):

    budgets 1e13 x 2^j spanning `decades`; `sizes` sizes per budget a factor 2 apart around N*_l(C);
    a run trained to budget C_r is read at every budget C <= C_r its constant-LR curve passes (C_r / 32 .. C_r);
    log L = log L_l(N, C / 6N) + run offset (sigma_run) + read noise (sigma_read)

with sigma_run^2 + sigma_read^2 = 0.017^2 and correlation 0.6 between two reads of one run. Each sweep is
fitted with fit_pooled and every 95% interval is checked against the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.fit.bootstrap import Interval
from analysis.fit.pooled import fit_pooled
from analysis.io.synthetic import HOFFMANN, Law

MULTIPLIERS = {"dense": 1.0, "fast": 1.5, "slow": 0.5}
NOISE = 0.017  # std of log L of one read
CORRELATION = 0.6  # between two reads of one run
READ_SPAN = 32.0  # a run's curve starts at 1/32 of its final FLOPs
CELLS = ("0.3x1", "0.3x3", "1.5x1", "1.5x3")


@dataclass(frozen=True)
class Cell:
    """Budgets spanning `decades` (factor-2 steps) and `seeds` per config."""

    decades: float
    seeds: int
    sizes: int = 5

    @classmethod
    def parse(cls, text: str) -> "Cell":
        decades, seeds = text.split("x")
        return cls(float(decades), int(seeds))

    @property
    def name(self) -> str:
        return f"{self.decades:g}x{self.seeds}"

    @property
    def budgets(self) -> np.ndarray:
        steps = int(round(self.decades / math.log10(2)))
        return 1e13 * 2.0 ** np.arange(steps + 1)


def label_law(k: float, law: Law = HOFFMANN) -> Law:
    """dense's law with compute multiplier k: L*_l(C) = L*_dense(k C)."""
    scale = k ** -law.frontier_exponent
    return Law(law.E, law.A * scale, law.B * scale, law.alpha, law.beta)


def draw_reads(cell: Cell, rng: np.random.Generator, laws: dict[str, Law] | None = None) -> pd.DataFrame:
    """One simulated sweep's reads (label, run_id, flops, n, loss); `laws` default: MULTIPLIERS' laws."""
    sigma_run, sigma_read = NOISE * math.sqrt(CORRELATION), NOISE * math.sqrt(1 - CORRELATION)
    budgets, rows, run = cell.budgets, [], 0
    laws = laws or {label: label_law(k) for label, k in MULTIPLIERS.items()}
    for label, law in laws.items():
        for c_run in budgets:
            centre = round(math.log2(law.n_opt(c_run)) + rng.uniform(-0.5, 0.5))
            for step in np.arange(cell.sizes) - (cell.sizes - 1) // 2:
                n = 2.0 ** (centre + step)
                for _ in range(cell.seeds):
                    offset = rng.normal(0, sigma_run)
                    reads = budgets[(budgets <= c_run * 1.001) & (budgets >= c_run / READ_SPAN)]
                    loss = law.loss(n, reads / (6 * n)) * np.exp(offset + rng.normal(0, sigma_read, reads.size))
                    rows += [(label, run, c, n, v) for c, v in zip(reads, loss)]
                    run += 1
    return pd.DataFrame(rows, columns=["label", "run_id", "flops", "n", "loss"])


def _covers(iv: Interval, truth: float) -> float:
    """1 when the interval holds the truth, 0 when not, nan when there is no interval (not identifiable)."""
    return float(iv.contains(truth)) if np.isfinite(iv.lo) and np.isfinite(iv.hi) else float("nan")


def sweep_coverage(cell: Cell, seed: int, replicates: int) -> dict:
    """Fit one simulated sweep; whether each 95% interval holds the truth (and the LR test's p-value)."""
    rng = np.random.default_rng(seed)
    fit = fit_pooled(draw_reads(cell, rng), replicates=replicates, seed=seed)
    truth = HOFFMANN.frontier_exponent
    row = {"cell": cell.name, "sweep": seed, "p_value": fit.p_value, "alpha": _covers(fit.alpha, truth),
           "alpha_width": fit.alpha.hi / fit.alpha.lo}
    for label, k in MULTIPLIERS.items():
        if label == fit.reference:
            continue
        res = fit.labels[label]
        row[f"k_{label}"] = _covers(res.multiplier, k)
        row[f"k_{label}_estimate"] = res.multiplier.value
        row[f"k_{label}_width"] = res.multiplier.hi / res.multiplier.lo
        row[f"k_{label}_per_label"] = _covers(res.multiplier_per_label, k)
    for label in MULTIPLIERS:
        row[f"alpha_{label}"] = _covers(fit.labels[label].alpha_per_label, truth)
    return row


def run_cells(cells: list[Cell], sweeps: int, seed: int = 0, replicates: int = 200) -> pd.DataFrame:
    """Per sweep of every cell: coverage booleans, interval widths (hi/lo) and the LR test's p-value."""
    seeds = np.random.SeedSequence(seed).generate_state(len(cells) * sweeps).reshape(len(cells), sweeps)
    return pd.DataFrame([sweep_coverage(cell, int(s), replicates) for cell, row in zip(cells, seeds) for s in row])


def summary(per_sweep: pd.DataFrame) -> pd.DataFrame:
    """Per cell: the fraction of sweeps whose interval held the truth, median widths, and the test's size."""
    cover = [c for c in per_sweep.columns if (c.startswith("k_") or c.startswith("alpha"))
             and not c.endswith(("_width", "_estimate"))]
    widths = [c for c in per_sweep.columns if c.endswith(("_width", "_estimate"))]
    g = per_sweep.groupby("cell", sort=False)
    out = g[cover].mean().join(g[widths].median())
    out["lr_rejects_at_5%"] = g["p_value"].apply(lambda p: float((p < 0.05).mean()))
    out["sweeps"] = g.size()
    return out.reset_index()


def write(per_sweep: pd.DataFrame, out: Path, command: str) -> Path:
    """coverage.csv (per sweep), summary.csv and coverage.md (the table and the command that made it)."""
    out.mkdir(parents=True, exist_ok=True)
    per_sweep.to_csv(out / "coverage.csv", index=False)
    table = summary(per_sweep)
    table.to_csv(out / "summary.csv", index=False)
    cols = list(table.columns)
    lines = ["# Coverage of the pooled fit's 95% intervals", "", __doc__.split("\n\n", 1)[1].strip(), "",
             f"Truth: multipliers {MULTIPLIERS} (dense the reference), exponent alpha* = "
             f"{HOFFMANN.frontier_exponent:.4f} for every label. Columns k_* and alpha*: the fraction of sweeps whose "
             "interval holds the truth (shared model unless `_per_label`); `_width`: median hi/lo; "
             "`_estimate`: median point estimate; `lr_rejects_at_5%`: how often the test rejects the (true) shared "
             "model; n/a: no interval (a per-label exponent from 2 budgets is not identifiable).", "",
             "Made by:", "", f"    {command}", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table.itertuples(index=False):
        lines.append("| " + " | ".join(("n/a" if np.isnan(v) else f"{v:.3f}") if isinstance(v, float) else str(v)
                                       for v in r) + " |")
    (out / "coverage.md").write_text("\n".join(lines) + "\n")
    return out / "coverage.md"
