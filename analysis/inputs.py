"""Turn the run table into each fit's inputs: best-LR runs, evaluation curves and the seed noise.

A config is everything but the seed and the learning rate: (label, width, depth, tokens_target). For the
isoFLOP and parametric fits each config keeps the runs of its best (lr, parametrization), judged by the mean
log-loss over seeds, so an LR sweep feeds the frontier with its optimum only. Seed noise is measured over runs
that share a config and an lr.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.load import RunTable
from analysis.noise import SeedNoise, measure_seed_noise

CONFIG_COLS = ("label", "width", "depth", "tokens_target")
HPARAM_COLS = ("lr", "parametrization")


def _group_codes(runs: pd.DataFrame, cols: tuple[str, ...]) -> np.ndarray:
    return runs.groupby(list(cols), dropna=False, sort=False).ngroup().to_numpy()


def best_lr_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of each config's best (lr, parametrization); all of that setting's seeds are kept."""
    if runs.empty:
        return runs
    config = _group_codes(runs, CONFIG_COLS)
    setting = _group_codes(runs, CONFIG_COLS + HPARAM_COLS)
    log_loss = pd.Series(np.log(runs["final_val_loss"].to_numpy(float)))
    mean_log = log_loss.groupby(setting).transform("mean")
    best = mean_log.groupby(config).transform("min")
    return runs[np.isclose(mean_log.to_numpy(), best.to_numpy(), rtol=0, atol=1e-12)]


def seed_noise(runs: pd.DataFrame) -> SeedNoise | None:
    """Pooled seed-to-seed spread of log final loss over runs sharing config and hyperparameters."""
    return measure_seed_noise(runs, CONFIG_COLS + HPARAM_COLS, "final_val_loss")


def isoflop_points(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows (flops, n, loss, params) of the best-LR runs: n is N_eff, params the raw count."""
    best = best_lr_runs(runs)
    return pd.DataFrame({"flops": best["flops"].to_numpy(float), "n": best["n_eff"].to_numpy(float),
                         "loss": best["final_val_loss"].to_numpy(float), "params": best["params"].to_numpy(float)})


def frontier_curves(table: RunTable, runs: pd.DataFrame) -> pd.DataFrame:
    """Evaluation curves (run_id, flops, loss) of `runs`: every run and every evaluation point."""
    ev = table.evals[table.evals["run_id"].isin(runs["run_id"])]
    return pd.DataFrame({"run_id": ev["run_id"].to_numpy(), "flops": ev["flops"].to_numpy(float),
                         "loss": ev["val_loss"].to_numpy(float)})
