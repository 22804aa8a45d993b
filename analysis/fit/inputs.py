"""Turn the run table into each fit's inputs: isoFLOP points read from curves, best-LR runs, curves, seed noise.

A config is everything but the seed and the hyperparameters: (label, width, depth, tokens_target). The isoFLOP
fit reads every run's curve at every budget (analysis.fit.budgets) and keeps, per (budget, N_eff), the best
hyperparameter setting (lr, parametrization, batch size), averaging only over seeds (analysis.fit.hparams). The
parametric fit takes each config's best setting's final losses. Seed noise is measured over runs that share a
config and a setting. Under the fixed-epoch protocol (every width trained the same epochs, CBS's MLP comparison)
each run at its label's sweep LR is one point of its label's loss-vs-compute curve.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.fit.budgets import CURVE_SCHEDULES, budget_grid, declared_budgets, read_at_budgets
from analysis.fit.hparams import best_over_hparams
from analysis.fit.isoflop import DEFAULT_BUDGET_TOLERANCE
from analysis.io.load import RunTable
from analysis.fit.noise import SeedNoise, measure_seed_noise

CONFIG_COLS = ("label", "width", "depth", "tokens_target")
HPARAM_COLS = ("lr", "parametrization", "batch_size")


def _group_codes(runs: pd.DataFrame, cols: tuple[str, ...]) -> np.ndarray:
    return runs.groupby(list(cols), dropna=False, sort=False).ngroup().to_numpy()


def best_lr_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of each config's best hyperparameter setting; all of that setting's seeds are kept."""
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


def final_only(runs: pd.DataFrame) -> frozenset[str]:
    """Runs whose LR schedule decays to their own end: read only at their final budget."""
    return frozenset(runs.loc[~runs["schedule"].isin(CURVE_SCHEDULES), "run_id"])


def _configs(runs: pd.DataFrame, run_ids: np.ndarray) -> np.ndarray:
    """Config and setting of each run id (runs differing only in seed share one): the frontier averages them."""
    codes = pd.Series(_group_codes(runs, CONFIG_COLS + HPARAM_COLS), index=runs["run_id"].to_numpy())
    return codes.reindex(run_ids).to_numpy()


def frontier_curves(table: RunTable, runs: pd.DataFrame) -> pd.DataFrame:
    """Evaluation curves (run_id, flops, loss, config) of `runs`: every run and every evaluation point."""
    ev = table.evals[table.evals["run_id"].isin(runs["run_id"])]
    return pd.DataFrame({"run_id": ev["run_id"].to_numpy(), "flops": ev["flops"].to_numpy(float),
                         "loss": ev["val_loss"].to_numpy(float), "config": _configs(runs, ev["run_id"].to_numpy())})


def wall_curves(table: RunTable, runs: pd.DataFrame) -> pd.DataFrame:
    """Curves against measured training seconds (run_id, flops = wall seconds, loss, config), for the wall-clock
    frontier."""
    ev = table.evals[table.evals["run_id"].isin(runs["run_id"])]
    wall = pd.to_numeric(ev["wall_s"], errors="coerce").to_numpy(float)
    keep = np.isfinite(wall) & (wall > 0)
    ids = ev["run_id"].to_numpy()[keep]
    return pd.DataFrame({"run_id": ids, "flops": wall[keep], "loss": ev["val_loss"].to_numpy(float)[keep],
                         "config": _configs(runs, ids)})


def isoflop_points(table: RunTable, runs: pd.DataFrame, interpolate_lr: bool = False,
                   tolerance: float = DEFAULT_BUDGET_TOLERANCE) -> pd.DataFrame:
    """Rows (flops, n, loss, seeds, settings, params): the best setting's loss per budget and N_eff (from curves)."""
    curves, once = frontier_curves(table, runs), final_only(runs)
    firsts = curves[~curves["run_id"].isin(once)].groupby("run_id")["flops"].min().to_numpy()
    budgets = budget_grid(runs["flops"].to_numpy(float), tolerance, firsts, declared_budgets(runs, once))
    reads = read_at_budgets(curves, budgets, once, tolerance)
    info = runs[["run_id", "n_eff", "params", *HPARAM_COLS]]
    points = reads.merge(info, on="run_id")
    return best_over_hparams(points, "n_eff", ("parametrization", "batch_size"), "lr", interpolate_lr)


def pooled_reads(table: RunTable, runs: pd.DataFrame,
                 tolerance: float = DEFAULT_BUDGET_TOLERANCE) -> pd.DataFrame:
    """Rows (label, run_id, flops, n, loss): every run's loss at each budget its curve passes, per label, keeping
    at each (label, budget, N_eff) only the runs (seeds) of the best hyperparameter setting."""
    frames = []
    for label, mine in runs.groupby("label", sort=False):
        curves, once = frontier_curves(table, mine), final_only(mine)
        firsts = curves[~curves["run_id"].isin(once)].groupby("run_id")["flops"].min().to_numpy()
        budgets = budget_grid(mine["flops"].to_numpy(float), tolerance, firsts, declared_budgets(mine, once))
        reads = read_at_budgets(curves, budgets, once, tolerance).merge(
            mine[["run_id", "n_eff", *HPARAM_COLS]], on="run_id")
        cell = _group_codes(reads, ("flops", "n_eff"))
        setting = _group_codes(reads, ("flops", "n_eff", *HPARAM_COLS))
        mean_log = pd.Series(np.log(reads["loss"].to_numpy(float))).groupby(setting).transform("mean")
        best = mean_log.groupby(cell).transform("min")
        keep = np.isclose(mean_log.to_numpy(), best.to_numpy(), rtol=0, atol=1e-12)
        frames.append(pd.DataFrame({"label": label, "run_id": reads["run_id"].to_numpy()[keep],
                                    "flops": reads["flops"].to_numpy(float)[keep],
                                    "n": reads["n_eff"].to_numpy(float)[keep],
                                    "loss": reads["loss"].to_numpy(float)[keep]}))
    return pd.concat(frames, ignore_index=True)


def is_fixed_epochs(runs: pd.DataFrame) -> bool:
    """The fixed-epoch protocol (CBS's MLP comparison): every run trained the same token/example budget with an LR
    that decays to its own end, and every label has 2 or more widths (each width is one point of its curve)."""
    target = runs["tokens_target"].fillna(runs["tokens"]) if "tokens" in runs else runs["tokens_target"]
    return bool(len(runs)) and target.notna().all() and target.nunique() == 1 and \
        not runs["schedule"].isin(CURVE_SCHEDULES).any() and int(runs.groupby("label")["width"].nunique().min()) >= 2


def main_lr_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per label, the runs at its sweep LR: the lr most of its runs used (ties: the smaller lr). Runs at other lrs
    are an LR check (analysis.fit.lr_transfer), not points of the curve: picking the best lr per width would pull
    the widths that have several lrs below the others."""
    keep = []
    for _, mine in runs.groupby("label", sort=False):
        counts = mine["lr"].value_counts()
        main = min(counts.index[counts == counts.max()])
        keep.append(mine[np.isclose(mine["lr"].to_numpy(float), main, rtol=1e-9, atol=0)])
    return pd.concat(keep) if keep else runs


def fixed_epoch_points(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows (label, run_id, flops, n, loss): every run at its label's sweep LR as one point (its training FLOPs and
    final loss) of its label's loss-vs-compute curve, for the fixed-epoch pooled fit."""
    main = main_lr_runs(runs)
    return pd.DataFrame({"label": main["label"].to_numpy(), "run_id": main["run_id"].to_numpy(),
                         "flops": main["flops"].to_numpy(float), "n": main["n_eff"].to_numpy(float),
                         "loss": main["final_val_loss"].to_numpy(float)})
