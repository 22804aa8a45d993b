"""Analytic FLOPs/params of whole models against hand formulas and torch's FlopCounterMode."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from scaling.config.schema import ModelConfig, StructureConfig
from scaling.data.interface import DataInfo
from scaling.models.flops import measure_flops, model_flops
from scaling.models import build_model
from scaling.structures import REGISTRY
from structure_presets import structure_config

TEXT = DataInfo(kind="text", unit="token", vocab_size=64)
# 16 classes and 256 flat inputs so that every structure, the head's included, can factorise every layer
IMAGE = DataInfo(kind="image", unit="example", input_shape=(1, 16, 16), num_classes=16)
FLAT_IMAGE = DataInfo(kind="image", unit="example", input_shape=(256,), num_classes=16)
TEACHER = DataInfo(kind="teacher", unit="example", input_shape=(8,), output_dim=1, loss="mse")
D, L, T, V = 64, 2, 16, 64  # width, depth, GPT-2 context, vocabulary
MODELS = {
    "gpt2": (ModelConfig(family="gpt2", width=D, head_dim=16, depth=L, context=T), TEXT),
    "vit": (ModelConfig(family="vit", width=D, head_dim=16, depth=L, patch_size=4), IMAGE),
    "mlp": (ModelConfig(family="mlp", width=D, depth=L), FLAT_IMAGE),
}


pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.mark.parametrize("layers", ["all", "all_but_last"])
@pytest.mark.parametrize("structure", sorted(REGISTRY))
@pytest.mark.parametrize("family", sorted(MODELS))
def test_linear_flops_match_the_counter_and_params_match(family: str, structure: str, layers: str) -> None:
    model_cfg, info = MODELS[family]
    torch.manual_seed(0)
    model = build_model(model_cfg, structure_config(structure, layers=layers), info)
    report = model_flops(model, info)
    measured = measure_flops(model, info)
    for layer in report.layers:
        assert measured.layers[layer.name] == pytest.approx(layer.flops, rel=0.01), layer
    assert measured.linear_flops_per_unit == pytest.approx(report.linear_flops_per_unit, rel=0.01)
    assert measured.attention_flops_per_unit == report.attention_flops_per_unit
    # everything the counter saw is linear layers plus attention: nothing is missed by the analytic count
    assert measured.total == pytest.approx(report.forward_flops_per_unit, rel=0.01)
    assert report.params == sum(p.numel() for p in model.parameters())
    assert report.train_flops_per_unit == 3 * report.forward_flops_per_unit


def test_dense_gpt2_matches_hand_formula() -> None:
    model_cfg, info = MODELS["gpt2"]
    model = build_model(model_cfg, StructureConfig(), info)
    report = model_flops(model, info)
    # per token: q, k, v, out (4 d^2 MACs) + FFN (8 d^2 MACs) per block, head d V; 2 FLOPs per MAC
    assert report.linear_flops_per_unit == L * 2 * 12 * D * D + 2 * D * V
    # scores and values: 2 * 2 * T * d per token per block, causal mask not discounted
    assert report.attention_flops_per_unit == L * 4 * T * D
    blocks = L * (12 * D * D + 2 * D)  # matrices + two LayerNorm weights (no bias)
    assert report.params == V * D + T * D + blocks + D + D * V
    assert report.params_nonembed == report.params - V * D - T * D
    # attention length follows the context the run trains at
    assert model_flops(model, info, context=32).attention_flops_per_unit == L * 4 * 32 * D


def test_tied_head_counts_the_unembedding_but_not_its_params() -> None:
    model_cfg, info = MODELS["gpt2"]
    model = build_model(dataclasses.replace(model_cfg, tie_head=True), StructureConfig(), info)
    report = model_flops(model, info)
    assert report.linear_flops_per_unit == L * 2 * 12 * D * D + 2 * D * V
    assert [(u.name, u.role, u.flops) for u in report.layers][-1] == ("unembed", "head", 2 * D * V)
    assert report.params_nonembed == report.params - V * D - T * D
    assert measure_flops(model, info).layers["unembed"] == 2 * D * V


@pytest.mark.parametrize("pool, positions", [("cls", 17), ("mean", 16)])
def test_dense_vit_counts_per_image(pool: str, positions: int) -> None:
    model_cfg, info = MODELS["vit"]
    model = build_model(dataclasses.replace(model_cfg, pool=pool), StructureConfig(), info)
    report = model_flops(model, info)
    patches, patch_dim, classes = 16, 16, 16
    linear = patches * 2 * patch_dim * D + positions * L * 2 * 12 * D * D + 2 * D * classes
    assert report.linear_flops_per_unit == linear
    assert report.attention_flops_per_unit == positions * L * 4 * positions * D
    embeddings = positions * D + (D if pool == "cls" else 0)
    assert report.params_nonembed == report.params - embeddings


def test_dense_mlp_counts_per_example() -> None:
    model_cfg, info = MODELS["mlp"][0], TEACHER
    report = model_flops(build_model(model_cfg, StructureConfig(), info), info)
    assert report.linear_flops_per_unit == 2 * 8 * D + L * 2 * 8 * D * D + 2 * D * 1
    assert report.attention == [] and report.params_nonembed == report.params


def test_meta_model_gives_the_same_report() -> None:
    model_cfg, info = MODELS["vit"]
    cfg = structure_config("einsum")
    real = model_flops(build_model(model_cfg, cfg, info), info)
    with torch.device("meta"):
        meta = model_flops(build_model(model_cfg, cfg, info), info)
    assert meta == real
    with torch.device("meta"), pytest.raises(ValueError, match="meta device"):
        measure_flops(build_model(model_cfg, cfg, info), info)


@pytest.mark.parametrize("family", ["gpt2", "vit"])
def test_attention_count_matches_explicit_attention_and_sdpa_output(family: str) -> None:
    """The analytic attention count equals the counter on explicit matmul attention, which computes what SDPA does."""
    model_cfg, info = MODELS[family]
    torch.manual_seed(0)
    model = build_model(model_cfg, StructureConfig(), info)
    report, measured = model_flops(model, info), measure_flops(model, info)
    for a in report.attention:
        assert measured.attention[a.name] == a.flops > 0
    x = torch.randint(0, V, (2, T)) if family == "gpt2" else torch.randn(2, *info.input_shape)
    with torch.no_grad():
        sdpa = model(x)[0]
        for _, core in [(n, m) for n, m in model.named_modules() if hasattr(m, "explicit")]:
            core.explicit = True
        torch.testing.assert_close(model(x)[0], sdpa)


def test_sdpa_on_cpu_is_invisible_to_the_counter() -> None:
    """Why attention is measured with explicit matmuls: documents torch's behaviour this count relies on."""
    q = torch.randn(1, 2, 8, 4)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    assert counter.get_total_flops() == 0


def test_ffn_moe_counts_router_and_top_k_experts() -> None:
    model_cfg, info = MODELS["gpt2"]
    experts, top_k = 4, 2
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(model_cfg, ffn_experts=experts, ffn_top_k=top_k), StructureConfig(), info)
    report, measured = model_flops(model, info), measure_flops(model, info)
    ffn = [u for u in report.layers if u.name.endswith(".ffn")]
    assert len(ffn) == L
    # router 2 d E + k experts of 2 * 2 * d * 4d each
    assert all(u.flops == 2 * D * experts + top_k * 16 * D * D for u in ffn)
    assert report.linear_flops_per_unit == L * (2 * 4 * D * D + 2 * D * experts + top_k * 16 * D * D) + 2 * D * V
    for u in ffn:
        assert measured.layers[u.name] == pytest.approx(u.flops, rel=0.01)
    assert report.params == sum(p.numel() for p in model.parameters())
