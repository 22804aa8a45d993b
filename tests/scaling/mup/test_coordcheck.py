"""Coordinate check (scaling.coordcheck): option parsing, the slope fit, and the muP behaviour it exists to show."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from scaling.config.schema import ModelConfig, StructureConfig
from scaling.cli.coordcheck import main
from scaling.mup.coordcheck import CoordCheckConfig, fit_slopes, parse_args, update_sizes
from scaling.data.interface import DataInfo
from scaling.mup.parametrization import build_parametrized_model

TEACHER = DataInfo(kind="teacher", unit="example", input_shape=(8,), output_dim=1, loss="mse")

# Thresholds from measurements: `python -m scaling.coordcheck structure=S model.parametrization=P train.seed=K`
# (defaults: widths 64..512, 5 steps, lr 3e-3, 4 inits x 128 examples per width) over K in {0, 4, 6, 8}, plus
# 2 inits x 256 examples over K in {0, 2, 4, 6, 8}. Slopes of the hidden layers (ffn_up, ffn_down):
#   structure_aware  dense, btt, kron: every layer |s| <= 0.22 (0.32 once with 2 inits); hidden mean in [-0.16, 0.07]
#   naive            btt, kron: every hidden layer s <= -0.16; hidden mean in [-0.62, -0.30]
# Theory: naive gives a factor of fan-in ~ sqrt(d) the LR ~ 1/d, so its own update falls as d^-1/2 (the measured
# means sit above -1/2 because each layer's update also carries its input's change, part of which comes from the
# input layer, whose fan-in (8) is fixed so that its update is flat in both modes).
FLAT = 0.3  # structure_aware: every layer's |slope| below this
FLAT_MEAN = 0.2  # structure_aware: |mean hidden slope| below this
DRIFT_MEAN = -0.25  # naive btt/kron: mean hidden slope below this (a 1.7x fall over the 8x width range)


def hidden(slopes: pd.DataFrame) -> pd.Series:
    return slopes[slopes["role"].isin(["ffn_up", "ffn_down"])]["slope"]


@pytest.fixture
def one_thread():
    """The check runs many small matmuls: one intra-op thread is ~2x faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_options_split_from_run_overrides():
    cc, cfg = parse_args(["structure=kron", "coordcheck.widths=[32,64]", "coordcheck.steps=3", "train.lr=0.01"])
    assert cc.widths == [32, 64] and cc.steps == 3 and cc.seeds == CoordCheckConfig().seeds
    assert (cfg.model.family, cfg.data.kind, cfg.structure.name, cfg.train.lr) == ("mlp", "teacher", "kron", 0.01)
    _, gpt = parse_args(["model=gpt2", "data=shakespeare"])  # the defaults are only defaults
    assert gpt.model.family == "gpt2"


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match=r"coordcheck\.\{widths,steps,seeds,batch_size,out\}"):
        parse_args(["coordcheck.width=[64,128]"])
    with pytest.raises(ValueError, match=r"coordcheck\.widths=\[64\] needs at least two distinct"):
        parse_args(["coordcheck.widths=[64]"])
    with pytest.raises(ValueError, match=r"coordcheck\.steps=0 must be >= 1"):
        parse_args(["coordcheck.steps=0"])


def test_fit_recovers_a_known_power_law():
    widths, steps = [64, 128, 256, 512], [0, 1, 2]
    rows = [
        {"width": w, "seed": s, "layer": layer, "role": "ffn_up", "structure": "btt", "step": t,
         # last step: c * w^slope, with seed noise that averages out exactly
         "delta_rms": (3.0 * w**slope * (1.1 if s else 1 / 1.1)) if t == 2 else 1.0, "h_rms": 1.0}
        for w in widths for s in (0, 1) for t in steps for layer, slope in (("a", -0.5), ("b", 0.0))
    ]
    slopes = fit_slopes(pd.DataFrame(rows)).set_index("layer")["slope"]
    # the seed mean is 3 w^s (1.1 + 1/1.1) / 2: a constant factor, so the fitted slope is exact
    assert slopes["a"] == pytest.approx(-0.5, abs=1e-9) and slopes["b"] == pytest.approx(0.0, abs=1e-9)


def test_update_sizes_start_at_zero_and_grow_with_training():
    torch.manual_seed(0)
    cfg = ModelConfig(family="mlp", width=32, base_width=32, depth=1)
    model, rules = build_parametrized_model(cfg, StructureConfig(name="dense"), TEACHER)
    batch = (torch.randn(64, 8), torch.randn(64, 1))
    rows = pd.DataFrame(update_sizes(model, rules, batch, steps=3, lr=1e-2, betas=(0.9, 0.99), aux_weight=0.0))
    assert list(rows["layer"].unique()) == ["input", "blocks.0.ffn.ffn_up", "blocks.0.ffn.ffn_down", "head"]
    assert (rows[rows["step"] == 0]["delta_rms"] == 0).all()
    final = rows[rows["step"] == 3].set_index("layer")
    assert (final["delta_rms"] > 1e-3).all()
    # zero-init layers start at 0 output and move; the input layer's output is Theta(1) at init
    assert rows[(rows["step"] == 0) & (rows["layer"] == "head")]["h_rms"].item() == 0.0
    assert rows[(rows["step"] == 0) & (rows["layer"] == "input")]["h_rms"].item() > 0.3
    assert not any(layer._forward_hooks for _, layer in model.linear_layers())  # hooks removed


@pytest.mark.slow
@pytest.mark.parametrize("structure", ["dense", "btt", "kron"])
def test_structure_aware_updates_stay_flat_in_width(structure, tmp_path, one_thread):
    # Dense costs d^2 per layer, so it is checked one octave lower (widths 32..256) to keep the test quick.
    widths = ["coordcheck.widths=[32,64,128,256]"] if structure == "dense" else []
    slopes = main([f"structure={structure}", f"coordcheck.out={tmp_path}", *widths])
    assert (tmp_path / "coord.png").stat().st_size > 10_000
    coord = pd.read_csv(tmp_path / "coord.csv")
    assert len(coord) == 4 * 4 * len(slopes) * (5 + 1)  # widths x seeds x layers x steps 0..5
    assert set(slopes["structure"]) == ({"dense"} if structure == "dense" else {structure, "dense"})
    assert np.abs(slopes["slope"]).max() < FLAT, slopes
    assert abs(hidden(slopes).mean()) < FLAT_MEAN, slopes


@pytest.mark.slow
@pytest.mark.parametrize("structure", ["btt", "kron"])
def test_naive_updates_of_btt_and_kron_fall_with_width(structure, tmp_path, one_thread):
    slopes = main([f"structure={structure}", "model.parametrization=naive", f"coordcheck.out={tmp_path}"])
    assert (hidden(slopes) < -0.1).all(), slopes
    assert hidden(slopes).mean() < DRIFT_MEAN, slopes
