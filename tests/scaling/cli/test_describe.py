"""`python -m scaling.describe`: what a config builds, as text and as JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch

from scaling.config.schema import ModelConfig, StructureConfig
from scaling.data.interface import DataInfo
from scaling.cli.describe import format_text, describe_model, main
from scaling.structures import spectral_std

TEXT = DataInfo(kind="text", unit="token", vocab_size=64)
GPT2 = ModelConfig(family="gpt2", width=128, base_width=64, head_dim=32, depth=2, context=16)
BTT = StructureConfig(name="btt", rank=1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gpt2_btt() -> dict:
    torch.manual_seed(0)
    return describe_model(GPT2, BTT, TEXT)


def test_totals_and_flops(gpt2_btt: dict) -> None:
    d, v, t, layers = 128, 64, 16, 2
    assert gpt2_btt["params"] - gpt2_btt["params_nonembed"] == v * d + t * d
    assert gpt2_btt["params"] == gpt2_btt["params_nonembed"] + v * d + t * d
    assert gpt2_btt["attention_flops_per_unit"] == gpt2_btt["attention_flops_per_unit_measured"] == layers * 4 * t * d
    assert gpt2_btt["forward_flops_per_unit_measured"] == pytest.approx(gpt2_btt["forward_flops_per_unit"], rel=0.01)
    assert gpt2_btt["train_flops_per_unit"] == 3 * gpt2_btt["forward_flops_per_unit"]
    assert sum(layer["flops"] for layer in gpt2_btt["layers"]) == gpt2_btt["linear_flops_per_unit"]
    for layer in gpt2_btt["layers"]:
        assert layer["flops_measured"] == pytest.approx(layer["flops"], rel=0.01), layer["name"]
    json.dumps(gpt2_btt)  # serialisable as is


def test_layers_and_factor_rules(gpt2_btt: dict) -> None:
    layers = {layer["name"]: layer for layer in gpt2_btt["layers"]}
    assert len(layers) == 13 and list(layers)[-1] == "head"
    # BTT 128 -> 128 (rank 1): 128 = 8 x 16 blocks, two factors; structure-aware lr = base d_in / (2 * fan_in)
    q = layers["blocks.0.attn.q"]
    assert (q["role"], q["structure"], q["shape"]) == ("q", "btt", [128, 128])
    assert q["params"] == sum(math.prod(f["shape"]) for f in q["factors"])
    for f in q["factors"]:
        assert f["lr_mult"] == pytest.approx(64 / (2 * f["fan_in"]))
        assert f["init_std"] == pytest.approx(spectral_std(f["fan_in"], f["fan_out"]))
    # residual out-projections start with their last factor at zero
    assert [f["init_std"] == 0 for f in layers["blocks.1.attn.attn_out"]["factors"]] == [False, True]
    # the dense head: Adam muP lr base/width, zero init
    (w,) = layers["head"]["factors"]
    assert (w["shape"], w["fan_in"], w["lr_mult"], w["init_std"]) == ([64, 128], 128, 0.5, 0.0)


def test_text_output_lists_every_layer_and_factor(gpt2_btt: dict) -> None:
    text = format_text(gpt2_btt)
    assert f"params: {gpt2_btt['params']:,} total, {gpt2_btt['params_nonembed']:,} non-embedding" in text
    for layer in gpt2_btt["layers"]:
        assert layer["name"] in text
    assert text.count("lr_mult") == sum(len(layer["factors"]) for layer in gpt2_btt["layers"])
    assert "blocks.1.attn.core" in text


def test_ffn_moe_layers_are_counted_by_their_mixture() -> None:
    info = describe_model(
        ModelConfig(family="gpt2", width=64, base_width=64, head_dim=32, depth=1, context=8, ffn_experts=4),
        StructureConfig(),
        TEXT,
    )
    experts = [layer for layer in info["layers"] if layer["role"].startswith("ffn")]
    assert len(experts) == 8 and all(layer["flops"] is None for layer in experts)
    (moe,) = info["other_units"]
    assert moe["name"] == "blocks.0.ffn" and moe["flops"] == 2 * 64 * 4 + 2 * 16 * 64 * 64
    assert moe["flops_measured"] == pytest.approx(moe["flops"], rel=0.01)


OVERRIDES = ["model=mlp", "data=teacher", "structure=kron", "model.width=64", "model.depth=1"]


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", *OVERRIDES]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["family"], out["structure"], out["width"], out["unit"]) == ("mlp", "kron", 64, "example")
    assert [layer["role"] for layer in out["layers"]] == ["input", "ffn_up", "ffn_down", "head"]
    assert [layer["structure"] for layer in out["layers"]] == ["kron", "kron", "kron", "dense"]
    assert out["forward_flops_per_unit_measured"] == pytest.approx(out["forward_flops_per_unit"], rel=0.01)
    assert out["params"] == sum(layer["params"] for layer in out["layers"]) + 2 * 64  # + 2 LayerNorm weights


def test_cli_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(OVERRIDES) == 0
    out = capsys.readouterr().out
    assert out.startswith("mlp x kron (layers=all_but_last, layout=paper), width 64")
    assert "attention logits" not in out  # no attention in an MLP
    assert "forward FLOPs/example: analytic" in out
    assert "blocks.0.ffn.ffn_up" in out and "lr_mult" in out


def test_cli_json_shows_the_paper_btt_layout_and_the_attention_scale(capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's check: every 512 -> 512 BTT layer has the reference code's 24,576 params; logits q.k 8 / d_head."""
    assert main(["--json", "model=gpt2", "structure=btt", "model.width=512"]) == 0
    out = json.loads(capsys.readouterr().out)
    square = [layer for layer in out["layers"] if layer["structure"] == "btt" and layer["shape"] == [512, 512]]
    assert len(square) == 4 * out["depth"] and all(layer["params"] == 24_576 for layer in square)
    assert all([f["shape"] for f in layer["factors"]] == [[32, 16, 16], [16, 32, 32]] for layer in square)
    assert (out["attn_scale"], out["head_dim"], out["layout"]) == (8.0, 32, "paper")
    assert all(a["logit_scale"] == 8 / 32 for a in out["attention"])
    assert main(["model=gpt2", "structure=btt", "model.width=512", "model.attn_scale=1"]) == 0
    assert "attention logits: q.k * 1 / head_dim 32 = q.k * 0.03125" in capsys.readouterr().out


def test_cli_reports_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*OVERRIDES, "structure.layers=[q,mlp]"]) == 2
    assert "structure.layers has unknown roles ['mlp']" in capsys.readouterr().err
    assert main(["model=gpt2", "data=teacher"]) == 2
    assert "gpt2 needs text" in capsys.readouterr().err
