"""Hyperparameters inside a budget: the best loss per (budget, size) over every swept setting; seeds are averaged.

Rows sharing (budget, size) and every hyperparameter are seeds: their log-losses are averaged. Across settings
(learning rate, parametrization, batch size, ...) the lowest mean is kept, never the average. With
`interpolate`, the learning-rate axis of each setting with 3 or more learning rates is Akima-interpolated in
(log lr, log L) on 25 points per interval and its minimum is taken (Porian et al.'s `minimize_with_interp`);
the interpolant passes through the measured points, so it never exceeds the best measured lr.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.interpolate import Akima1DInterpolator

_FINE_PER_INTERVAL = 25


def _lr_minimum(log_lr: np.ndarray, log_loss: np.ndarray) -> float:
    order = np.argsort(log_lr)
    x, y = log_lr[order], log_loss[order]
    if x.size < 3:
        return float(y.min())
    fine = np.linspace(x[0], x[-1], (x.size - 1) * _FINE_PER_INTERVAL + 1)
    return float(min(np.nanmin(Akima1DInterpolator(x, y)(fine)), y.min()))


def best_over_hparams(points: pd.DataFrame, size_col: str = "n", hparam_cols: Sequence[str] = (),
                      lr_col: str | None = None, interpolate: bool = False) -> pd.DataFrame:
    """One row per (flops, size): columns flops, n, loss, seeds (of the best setting) and settings (tried).

    `points` has columns flops (the budget), `size_col`, loss, and the hyperparameter columns; extra numeric
    columns named `params` are carried along (median of the best setting).
    """
    keys = ["flops", size_col]
    hp = [c for c in (*hparam_cols, *([lr_col] if lr_col else [])) if c in points.columns]
    df = points.assign(log_loss=np.log(points["loss"].to_numpy(float)))
    agg = {"log_loss": ("log_loss", "mean"), "seeds": ("log_loss", "size")}
    if "params" in df.columns:
        agg["params"] = ("params", "median")
    per_setting = df.groupby(keys + hp, as_index=False, dropna=False).agg(**agg)
    if interpolate and lr_col in hp:
        others = keys + [c for c in hp if c != lr_col]
        interp = per_setting.groupby(others, dropna=False).apply(
            lambda g: _lr_minimum(np.log(g[lr_col].to_numpy(float)), g["log_loss"].to_numpy()), include_groups=False)
        per_setting = per_setting.merge(interp.rename("interp").reset_index(), on=others)
        per_setting["log_loss"] = np.minimum(per_setting["log_loss"], per_setting["interp"])
    settings = per_setting.groupby(keys, dropna=False)["log_loss"].transform("size")
    best = per_setting.loc[per_setting.groupby(keys, dropna=False)["log_loss"].idxmin()]
    out = best.assign(loss=np.exp(best["log_loss"].to_numpy()), settings=settings.loc[best.index].to_numpy())
    out = out.rename(columns={size_col: "n"})
    cols = ["flops", "n", "loss", "seeds", "settings"] + (["params"] if "params" in out.columns else [])
    return out[cols].reset_index(drop=True)
