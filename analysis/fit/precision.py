"""Does a lower training precision keep the loss? The measurement behind `train.precision=auto` (issue 24).

Runs of the same labels trained in a reference precision (fp32) and a candidate (bf16), several seeds each, to the
same budget. Per label: the mean final loss in each precision, their difference (candidate - reference) and its
standard error sqrt(s_ref^2 / n_ref + s_cand^2 / n_cand) from the seeds' sample variances. The candidate keeps the
loss of a label when |difference| <= 2 standard errors, and keeps it overall when it does so for every label.
Beside it, `speed`: the candidate's median training tokens per second (tokens / wall_time_s) over the reference's
(NaN without wall times), for the other half of the decision: a precision that keeps the loss is worth choosing only
where it is also faster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis.errors import AnalysisError

COLUMNS = ("label", "n_ref", "n_cand", "mean_ref", "mean_cand", "difference", "se", "keeps_loss", "speed")
SE_MULTIPLE = 2.0  # the rule: a difference within this many standard errors is not a loss of precision


@dataclass
class PrecisionCheck:
    """One row per label (COLUMNS), the two precisions compared and the overall verdict."""

    table: pd.DataFrame
    reference: str
    candidate: str
    metric: str

    @property
    def keeps_loss(self) -> bool:
        return bool(self.table["keeps_loss"].all())

    def as_dict(self) -> dict:
        return {"reference": self.reference, "candidate": self.candidate, "metric": self.metric,
                "keeps_loss": self.keeps_loss, "labels": self.table.to_dict(orient="records")}

    def markdown(self) -> str:
        ref, cand = self.reference, self.candidate
        lines = [f"| label | seeds {ref} / {cand} | mean {ref} | mean {cand} | difference | standard error "
                 f"| within {SE_MULTIPLE:g} SE | tokens/s {cand} / {ref} |", "|---|---|---|---|---|---|---|---|"]
        for r in self.table.itertuples():
            lines.append(f"| {r.label} | {r.n_ref} / {r.n_cand} | {r.mean_ref:.4f} | {r.mean_cand:.4f} | "
                         f"{r.difference:+.4f} | {r.se:.4f} | {'yes' if r.keeps_loss else 'no'} | {r.speed:.2f} |")
        verdict = "keeps" if self.keeps_loss else "does not keep"
        lines.append(f"\n{self.candidate} {verdict} the {self.metric} of {self.reference} (every label within "
                     f"{SE_MULTIPLE:g} standard errors of the difference of the means).")
        return "\n".join(lines)


def _speed(group: pd.DataFrame, precision: str) -> float:
    """Median training tokens per second of group's runs in this precision (NaN without wall times)."""
    if "wall_time_s" not in group.columns:
        return math.nan
    runs = group[group["precision"] == precision]
    return float((pd.to_numeric(runs["tokens"]) / pd.to_numeric(runs["wall_time_s"])).median())


def precision_check(runs: pd.DataFrame, reference: str = "fp32", candidate: str = "bf16",
                    metric: str = "final_val_loss") -> PrecisionCheck:
    """The comparison (module docstring) over runs with columns label, precision and `metric`; each label needs at
    least two seeds in each precision (a standard error needs a variance)."""
    missing = [c for c in ("label", "precision", metric) if c not in runs.columns]
    if missing:
        raise AnalysisError(f"precision check: the runs table lacks {missing}; runs need train.precision in their "
                            "config (results written by this version of the trainer)")
    rows = []
    for label, group in runs.groupby("label", sort=True):
        ref = pd.to_numeric(group.loc[group["precision"] == reference, metric]).dropna()
        cand = pd.to_numeric(group.loc[group["precision"] == candidate, metric]).dropna()
        if len(ref) < 2 or len(cand) < 2:
            raise AnalysisError(f"precision check: label {label} has {len(ref)} {reference} and {len(cand)} "
                                f"{candidate} runs with a {metric}; give each precision at least 2 seeds")
        se = math.sqrt(ref.var(ddof=1) / len(ref) + cand.var(ddof=1) / len(cand))
        difference = float(cand.mean() - ref.mean())
        rows.append((label, len(ref), len(cand), float(ref.mean()), float(cand.mean()), difference, se,
                     abs(difference) <= SE_MULTIPLE * se, _speed(group, candidate) / _speed(group, reference)))
    if not rows:
        raise AnalysisError("precision check: no runs to compare")
    return PrecisionCheck(pd.DataFrame(rows, columns=list(COLUMNS)), reference, candidate, metric)
