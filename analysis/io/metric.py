"""Which loss the fits read: the validation loss (the default) or the final training loss.

Every fit reads a run's `final_val_loss` and its evaluation curve (`evals.val_loss`). `with_metric(table,
"train_loss")` gives a table in which those hold the training loss instead: `final_val_loss` is the run's
`final_train_loss` (the mean over the last 5% of its training, analysis.io.load) and its curve is that one final
point (a training loss read mid-run under a decaying LR is not what a run trained to that point reaches). Runs
without train rows are excluded with that reason. The tables written beside a report keep both losses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.io.load import EVAL_COLUMNS, EXCLUDED_COLUMNS, RunTable
from scaling.store.states import RunState

METRICS = ("val_loss", "train_loss")
METRIC_NAMES = {"val_loss": "validation loss", "train_loss": "final training loss (mean over the last 5% of "
                "training)"}
NO_TRAIN_LOSS = "no train-loss rows (needed for --metric train_loss)"


def with_metric(table: RunTable, metric: str) -> RunTable:
    """`table` with the fits' loss columns holding `metric` (see the module docstring)."""
    if metric not in METRICS:
        raise AnalysisError(f"metric={metric!r}: must be one of {', '.join(METRICS)}", "metric")
    if metric == "val_loss":
        return table
    runs = table.runs
    loss = pd.to_numeric(runs["final_train_loss"], errors="coerce").to_numpy(float)
    ok = np.isfinite(loss) & (loss > 0)
    gone = pd.DataFrame({"run_id": runs.loc[~ok, "run_id"].to_numpy(), "status": RunState.COMPLETED,
                         "reason": NO_TRAIN_LOSS, "source": "metric train_loss"}, columns=list(EXCLUDED_COLUMNS))
    kept = runs[ok].assign(final_val_loss=loss[ok]).reset_index(drop=True)
    evals = pd.DataFrame({"run_id": kept["run_id"], "step": kept["steps"], "tokens": kept["tokens"].astype(float),
                          "flops": kept["flops"].astype(float), "val_loss": kept["final_val_loss"],
                          "wall_s": kept["wall_time_s"]}, columns=list(EVAL_COLUMNS))
    excluded = pd.concat([table.excluded, gone], ignore_index=True) if len(gone) else table.excluded
    return RunTable(kept, evals, excluded)
