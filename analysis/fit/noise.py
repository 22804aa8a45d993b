"""Seed noise: the spread of log-loss between runs that differ only in their random seed.

The bootstraps of the isoFLOP and frontier fits perturb losses by this much, so it is measured from
repeated seeds where they exist (pooled within-config standard deviation of log L, ddof = 1), or given as
an absolute loss std (`--loss-noise`, as published isoFLOP studies quote it; sigma(log L) = sigma / L):

    sigma^2 = sum_g sum_i (log L_gi - mean_g)^2 / sum_g (n_g - 1)     over configs g with n_g >= 2 seeds
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SeedNoise:
    """Standard deviation of log-loss and where it came from (for the report)."""

    sigma: float
    groups: int  # configs with repeated seeds that measured it (0: a fallback was used)
    source: str
    absolute: bool = False  # sigma is the std of L itself, not of log L

    def log_sigma(self, loss: np.ndarray) -> np.ndarray:
        """Std of log L at each loss."""
        loss = np.asarray(loss, float)
        return self.sigma / loss if self.absolute else np.full(loss.shape, self.sigma)


def given_noise(sigma: float) -> SeedNoise:
    """An absolute loss noise std from the user (e.g. --loss-noise 0.002)."""
    return SeedNoise(float(sigma), 0, f"given: loss std {sigma:g}", absolute=True)


def measure_seed_noise(df: pd.DataFrame, config_cols: Sequence[str], loss_col: str) -> SeedNoise | None:
    """Pooled seed noise over rows sharing `config_cols`; None when no config has two or more rows."""
    logl = np.log(df[loss_col].to_numpy(float))
    keys = df.groupby(list(config_cols), dropna=False, sort=False).ngroup().to_numpy() if config_cols else \
        np.zeros(len(df), dtype=int)
    sizes = np.bincount(keys)
    means = np.bincount(keys, weights=logl) / sizes
    dof = int((sizes - 1).sum())
    if dof == 0:
        return None
    sigma = float(np.sqrt(((logl - means[keys]) ** 2).sum() / dof))
    groups = int((sizes >= 2).sum())
    return SeedNoise(sigma, groups, f"repeated seeds ({groups} configs)")
