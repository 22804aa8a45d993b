"""Coordinate check: does every linear layer's activation update keep its size as the width grows?

For each width w and seed, build the model under `model.parametrization`, take one fixed training batch, run
`steps` AdamW steps on it (no weight decay, no clipping) and record for every linear layer (StructuredLinear)

    delta_rms(t) = sqrt(mean((h_t - h_0)^2)),   h_t = the layer's output on the batch after t steps.

Under a correct muP every delta_rms(t) is Theta(1) in the width, so the fitted log-log slope of delta_rms(steps)
against w is near 0. Under `naive`, a BTT or Kronecker factor (fan-in ~ sqrt(d)) gets the dense LR ~ 1/d and its
updates shrink as the width grows: the slope is negative.

Usage (run overrides compose conf/ as for a training run, with model=mlp data=teacher as defaults here;
`coordcheck.KEY=VALUE` sets a CoordCheckConfig field):

    python -m scaling.coordcheck structure=btt model.parametrization=naive \\
        coordcheck.widths=[64,128,256,512] coordcheck.steps=5 train.lr=1e-2

The LR and Adam betas are train.lr / train.beta1 / train.beta2. Writes coord.csv (one row per width, seed, layer,
step), slopes.csv (one row per layer) and coord.png into coordcheck.out, and prints the slope of every layer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from omegaconf.errors import OmegaConfBaseException  # noqa: E402

from scaling.config.schema import ModelConfig, StructureConfig  # noqa: E402
from scaling.config.compose import as_dataclass, compose_run_config  # noqa: E402
from scaling.data import build_data  # noqa: E402
from scaling.models import Model  # noqa: E402
from scaling.mup.parametrization import ParamRule, build_parametrized_model, make_optimizer  # noqa: E402

DEFAULT_OVERRIDES = ("model=mlp", "data=teacher", "logger=disabled")
PREFIX = "coordcheck."


@dataclass
class CoordCheckConfig:
    """What the coordinate check sweeps; set from the command line as coordcheck.KEY=VALUE."""

    widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    steps: int = 5  # Adam steps; the slope is fitted on the update after the last one
    seeds: int = 4  # model inits averaged per width: seeds train.seed, train.seed + 1, ...
    batch_size: int = 128  # examples in the fixed batch (sequences for text)
    out: str = "outputs/coordcheck"

    def __post_init__(self) -> None:
        if len(set(self.widths)) < 2 or min(self.widths) < 1:
            raise ValueError(
                f"coordcheck.widths={self.widths} needs at least two distinct positive widths, e.g. [64,128,256]"
            )
        for name in ("steps", "seeds", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"coordcheck.{name}={getattr(self, name)} must be >= 1")


def parse_args(argv: Sequence[str]) -> tuple[CoordCheckConfig, DictConfig]:
    """Split argv into coordcheck.* options and run overrides; compose and validate both."""
    ours = [a[len(PREFIX):] for a in argv if a.startswith(PREFIX)]
    run_overrides = [*DEFAULT_OVERRIDES, *(a for a in argv if not a.startswith(PREFIX))]
    schema = OmegaConf.structured(CoordCheckConfig)
    try:
        merged = OmegaConf.merge(schema, OmegaConf.from_dotlist(ours))
    except OmegaConfBaseException as err:  # unknown key, or a value of the wrong type
        fields = [f.name for f in dataclasses.fields(CoordCheckConfig)]
        raise ValueError(f"bad coordcheck option in {ours}: {err}; the options are coordcheck.{{{','.join(fields)}}}")
    return OmegaConf.to_object(merged), compose_run_config(run_overrides)


def update_sizes(model: Model, rules: dict[str, ParamRule], batch: tuple[torch.Tensor, torch.Tensor],
                 steps: int, lr: float, betas: tuple[float, float], aux_weight: float) -> list[dict[str, object]]:
    """Train `steps` AdamW steps on `batch`; rows of (layer, role, structure, step, delta_rms, h_rms) for
    t = 0..steps."""
    x, y = batch
    layers = model.linear_layers()
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
            outputs[name] = out.detach().float()
        return hook

    def measure(t: int) -> list[dict[str, object]]:
        with torch.no_grad():
            model(x, y)
        return [
            {"layer": name, "role": layer.role, "structure": layer.structure, "step": t,
             "delta_rms": (outputs[name] - initial[name]).pow(2).mean().sqrt().item(),
             "h_rms": outputs[name].pow(2).mean().sqrt().item()}
            for name, layer in layers
        ]

    handles = [layer.register_forward_hook(keep(name)) for name, layer in layers]
    try:
        with torch.no_grad():
            model(x, y)
        initial = dict(outputs)
        rows = measure(0)
        optimizer = make_optimizer(model, rules, lr=lr, betas=betas, weight_decay=0.0)
        for t in range(1, steps + 1):
            _, loss = model(x, y)
            aux = model.aux_loss()
            total = loss if aux is None else loss + aux_weight * aux
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            rows += measure(t)
    finally:
        for handle in handles:
            handle.remove()
    return rows


def run_coordcheck(cc: CoordCheckConfig, cfg: DictConfig) -> pd.DataFrame:
    """One row per (width, seed, layer, step) of the activation-update sizes."""
    structure_cfg = as_dataclass(cfg.structure, StructureConfig)
    base_model_cfg = as_dataclass(cfg.model, ModelConfig)
    t = cfg.train
    data = build_data(cfg.data, context=base_model_cfg.context, batch_size=cc.batch_size, seed=t.seed,
                      rank=0, world_size=1)
    batch = data.train.next_batch()
    rows = []
    for width in cc.widths:
        model_cfg = dataclasses.replace(base_model_cfg, width=width)
        for seed in range(t.seed, t.seed + cc.seeds):
            torch.manual_seed(seed)
            model, rules = build_parametrized_model(model_cfg, structure_cfg, data.info)
            sizes = update_sizes(model, rules, batch, cc.steps, t.lr, (t.beta1, t.beta2), structure_cfg.aux_weight)
            rows += [{"width": width, "seed": seed, **row} for row in sizes]
    return pd.DataFrame(rows)


def fit_slopes(df: pd.DataFrame) -> pd.DataFrame:
    """Per layer, the least-squares slope of log(mean-over-seeds delta_rms at the last step) on log(width)."""
    last = df[df["step"] == df["step"].max()]
    means = last.groupby(["layer", "role", "structure", "width"], sort=False)["delta_rms"].mean().reset_index()
    rows = []
    for (layer, role, structure), g in means.groupby(["layer", "role", "structure"], sort=False):
        slope = np.polyfit(np.log(g["width"]), np.log(g["delta_rms"]), 1)[0] if (g["delta_rms"] > 0).all() else np.nan
        rows.append({"layer": layer, "role": role, "structure": structure, "slope": float(slope)})
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, slopes: pd.DataFrame, title: str, path: Path) -> None:
    """Left: delta_rms after the last step against width, one line per layer; right: h_rms at init (scale check)."""
    fig, (ax_update, ax_init) = plt.subplots(1, 2, figsize=(13, 5), sharex=True)
    last, first = df["step"].max(), 0
    colors = plt.cm.viridis(np.linspace(0, 0.95, len(slopes)))
    for color, row in zip(colors, slopes.itertuples()):
        g = df[df["layer"] == row.layer].groupby(["step", "width"])[["delta_rms", "h_rms"]].mean()
        ax_update.plot(g.loc[last].index, g.loc[last]["delta_rms"], "o-", color=color,
                       label=f"{row.layer} ({row.structure}) slope {row.slope:+.2f}")
        ax_init.plot(g.loc[first].index, g.loc[first]["h_rms"], "o-", color=color)
    ax_update.set(title=f"|h_t - h_0| rms after {last} steps", ylabel="rms of the layer's output update")
    ax_init.set(title="|h_0| rms at init (zero-init layers omitted)", ylabel="rms of the layer's output")
    for ax in (ax_update, ax_init):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        mid = np.sqrt(low * high)  # show at least a decade, so that flat lines look flat
        ax.set_ylim(min(low, mid / 10**0.5), max(high, mid * 10**0.5))
        ax.set_xlabel("width")
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", dpi=110)
    plt.close(fig)
