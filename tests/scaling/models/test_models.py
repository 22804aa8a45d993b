"""Model families: shapes, losses that train, role selection, causal masking, tied heads, errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from scaling.config.schema import ModelConfig, StructureConfig
from scaling.data.interface import DataInfo
from scaling.models import ROLES, ModelConfigError, build_model
from scaling.models.gpt2 import AttentionCore
from scaling.structures import REGISTRY, StructureError
from structure_presets import structure_config

TEXT = DataInfo(kind="text", unit="token", vocab_size=64)
IMAGE = DataInfo(kind="image", unit="example", input_shape=(1, 16, 16), num_classes=10)
FLAT_IMAGE = DataInfo(kind="image", unit="example", input_shape=(256,), num_classes=10)
# 16 inputs: a rank-4 btt_norm input layer needs m0 = 4 input features per block (paper layout: 16 = 4 blocks of 4)
TEACHER = DataInfo(kind="teacher", unit="example", input_shape=(16,), output_dim=1, loss="mse")
MODELS = {
    "gpt2": (ModelConfig(family="gpt2", width=64, head_dim=16, depth=2, context=16, qk_norm=True), TEXT),
    "vit": (ModelConfig(family="vit", width=64, head_dim=16, depth=2, patch_size=4, qk_norm=True), IMAGE),
    "mlp": (ModelConfig(family="mlp", width=64, depth=2), FLAT_IMAGE),
    "mlp_teacher": (ModelConfig(family="mlp", width=64, depth=2), TEACHER),
}
EINSUM_BTT1 = StructureConfig(name="einsum", theta=[0.5, 0.0, 0.5, 0.0, 0.5, 0.5, 0.0])


pytestmark = pytest.mark.usefixtures("one_thread")



def batch(info: DataInfo, model_cfg: ModelConfig, n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if info.kind == "text":
        x = torch.randint(0, info.vocab_size, (n, model_cfg.context), generator=g)
        return x, torch.roll(x, -1, dims=1)
    x = torch.randn(n, *info.input_shape, generator=g)
    if info.kind == "teacher":
        return x, torch.sin(x.sum(dim=1, keepdim=True))
    return x, torch.randint(0, info.num_classes, (n,), generator=g)


def expected_output_shape(key: str, info: DataInfo, model_cfg: ModelConfig, n: int) -> tuple[int, ...]:
    if info.kind == "text":
        return (n, model_cfg.context, info.vocab_size)
    return (n, info.output_dim if info.kind == "teacher" else info.num_classes)


@pytest.mark.parametrize("structure", sorted(REGISTRY))
@pytest.mark.parametrize("key", sorted(MODELS))
def test_shapes_and_loss_decreases(key: str, structure: str) -> None:
    model_cfg, info = MODELS[key]
    torch.manual_seed(0)
    model = build_model(model_cfg, structure_config(structure), info)
    x, y = batch(info, model_cfg)
    out, loss = model(x, y)
    assert out.shape == expected_output_shape(key, info, model_cfg, len(x))
    assert model(x)[1] is None
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        _, loss = model(x, y)
        aux = model.aux_loss()
        assert torch.isfinite(loss)
        opt.zero_grad()
        (loss if aux is None else loss + 0.01 * aux).backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("key", sorted(MODELS))
def test_every_linear_map_is_a_structured_linear_with_a_role(key: str) -> None:
    model_cfg, info = MODELS[key]
    model = build_model(model_cfg, StructureConfig(name="dense"), info)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert all(layer.role in ROLES for _, layer in model.linear_layers())


def test_gpt2_registration_order() -> None:
    model_cfg, info = MODELS["gpt2"]
    model = build_model(model_cfg, StructureConfig(name="dense"), info)
    names = [name for name, _ in model.linear_layers()]
    block = ["attn.q", "attn.k", "attn.v", "attn.attn_out", "ffn.ffn_up", "ffn.ffn_down"]
    assert names == [f"blocks.{i}.{n}" for i in range(2) for n in block] + ["head"]


def structured_roles(key: str, layers, structure: StructureConfig = EINSUM_BTT1,
                     **model_changes) -> list[tuple[str, bool]]:
    model_cfg, info = MODELS[key]
    model = build_model(dataclasses.replace(model_cfg, **model_changes), dataclasses.replace(structure, layers=layers),
                        info)
    return [(layer.role, layer.structure != "dense") for _, layer in model.linear_layers()]


GPT2_ROLES = ["q", "k", "v", "attn_out", "ffn_up", "ffn_down"] * 2 + ["head"]


@pytest.mark.parametrize(
    "layers, structured",
    [
        ("all", [True] * 13),
        ("all_but_last", [True] * 12 + [False]),
        ("intermediate", [False] + [True] * 11 + [False]),
        ("ffn", [r.startswith("ffn") for r in GPT2_ROLES]),
        ("attn", [r in ("q", "k", "v", "attn_out") for r in GPT2_ROLES]),
        (["v", "head"], [r in ("v", "head") for r in GPT2_ROLES]),
    ],
)
def test_role_selection_gpt2(layers, structured: list[bool]) -> None:
    assert structured_roles("gpt2", layers) == list(zip(GPT2_ROLES, structured))


def test_role_selection_input_layers() -> None:
    # all_but_last includes the input-side layer (as in the reference); intermediate drops it and the head.
    mlp = structured_roles("mlp", "all_but_last")
    assert mlp[0] == ("input", True) and mlp[-1] == ("head", False)
    assert all(s for _, s in mlp[:-1])
    mlp_mid = structured_roles("mlp", "intermediate")
    assert mlp_mid[0] == ("input", False) and mlp_mid[-1] == ("head", False) and all(s for _, s in mlp_mid[1:-1])
    vit = structured_roles("vit", "intermediate")
    assert vit[0] == ("patch_embed", False) and vit[-1] == ("head", False) and all(s for _, s in vit[1:-1])
    assert structured_roles("vit", ["patch_embed"]) == [("patch_embed", True)] + [(r, False) for r, _ in vit[1:]]


def test_tied_head_has_no_head_layer_and_all_but_last_selects_everything() -> None:
    roles = structured_roles("gpt2", "all_but_last", tie_head=True)
    assert roles == [(r, True) for r in GPT2_ROLES[:-1]]


def test_tied_head_unembeds_with_the_token_embedding() -> None:
    model_cfg, info = MODELS["gpt2"]
    tied = build_model(dataclasses.replace(model_cfg, tie_head=True), StructureConfig(), info)
    untied = build_model(model_cfg, StructureConfig(), info)
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n_params(untied) - n_params(tied) == model_cfg.width * info.vocab_size
    # Zero the residual branches: the network is then LN(wte[x] + wpe[t]) followed by the unembedding wte^T.
    with torch.no_grad():
        for _, layer in tied.linear_layers():
            if layer.role in ("attn_out", "ffn_down"):
                layer.weight.zero_()
    x, _ = batch(info, model_cfg)
    logits, _ = tied(x)
    h = tied.wte.weight[x] + tied.wpe.weight[: x.shape[1]]
    expected = F.layer_norm(h, (model_cfg.width,), tied.ln_f.weight) @ tied.wte.weight.T
    torch.testing.assert_close(logits, expected)


def test_causal_masking_future_tokens_do_not_change_past_outputs() -> None:
    model_cfg, info = MODELS["gpt2"]
    torch.manual_seed(0)
    model = build_model(model_cfg, structure_config("einsum"), info)
    x, _ = batch(info, model_cfg, n=2)
    x_changed = x.clone()
    x_changed[:, 10:] = (x[:, 10:] + 1) % info.vocab_size
    out, out_changed = model(x)[0], model(x_changed)[0]
    torch.testing.assert_close(out[:, :10], out_changed[:, :10])
    assert (out[:, 10:] - out_changed[:, 10:]).abs().max() > 1e-3


def test_vit_attention_is_bidirectional() -> None:
    model_cfg, info = MODELS["vit"]
    torch.manual_seed(0)
    model = build_model(model_cfg, StructureConfig(), info)
    x, _ = batch(info, model_cfg, n=2)
    x_changed = x.clone()
    x_changed[..., 12:, 12:] += 1.0  # only the last patch changes; the class token output must see it
    assert (model(x)[0] - model(x_changed)[0]).abs().max() > 1e-4


@pytest.mark.parametrize("causal,c", [(True, 8.0), (False, 8.0), (True, 1.0)])
def test_attention_uses_mup_scale_and_explicit_matches_sdpa(causal: bool, c: float) -> None:
    b, h, t, d = 2, 3, 5, 8
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, h, t, d, generator=g) for _ in range(3))
    core = AttentionCore(n_heads=h, head_dim=d, causal=causal, attn_scale=c)
    scores = q @ k.transpose(-2, -1) * c / d  # muP: c/d_head, not 1/sqrt(d_head)
    if causal:
        scores = scores + torch.full((t, t), float("-inf")).triu(1)
    expected = scores.softmax(-1) @ v
    torch.testing.assert_close(core(q, k, v), expected)
    core.explicit = True
    torch.testing.assert_close(core(q, k, v), expected)


def test_cpu_bf16_attention_is_computed_in_fp32() -> None:
    """bf16 q, k, v on the CPU (bf16 autocast hands them over) are attended in fp32, gradients included, and the
    output is the fp32 result rounded to bf16 (torch's CPU bf16 attention is slower and less accurate)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 64, 8, generator=g).bfloat16().requires_grad_(True) for _ in range(3))
    core = AttentionCore(n_heads=3, head_dim=8, causal=True, attn_scale=8.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = core(q, k, v)
    leaves = [t.detach().float().requires_grad_(True) for t in (q, k, v)]
    expected = F.scaled_dot_product_attention(*leaves, is_causal=True, scale=1.0)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, expected.bfloat16())
    out.float().sum().backward()
    expected.sum().backward()
    for bf16, fp32 in zip((q, k, v), leaves):
        assert bf16.grad.dtype == torch.bfloat16
        torch.testing.assert_close(bf16.grad.float(), fp32.grad, rtol=1e-2, atol=1e-2)


def test_mlp_pools_vit_mean_and_flat_images() -> None:
    model_cfg, info = MODELS["vit"]
    model = build_model(dataclasses.replace(model_cfg, pool="mean"), StructureConfig(), info)
    x, _ = batch(info, model_cfg)
    assert model(x)[0].shape == (4, 10)
    assert model.seq_len == 16 and not hasattr(model, "cls_token")
    # the MLP takes images as (C, H, W) or flattened alike
    mlp = build_model(MODELS["mlp"][0], StructureConfig(), IMAGE)
    torch.testing.assert_close(mlp(x)[0], mlp(x.flatten(1))[0])


@pytest.mark.parametrize("key", sorted(MODELS))
def test_builds_on_meta_device(key: str) -> None:
    model_cfg, info = MODELS[key]
    with torch.device("meta"):
        model = build_model(model_cfg, EINSUM_BTT1, info)
    assert all(p.is_meta for p in model.parameters())


def test_aux_loss_is_none_without_routers() -> None:
    model_cfg, info = MODELS["gpt2"]
    model = build_model(model_cfg, StructureConfig(), info)
    model(batch(info, model_cfg)[0])
    assert model.aux_loss() is None


@pytest.mark.skipif("btt_moe" not in REGISTRY, reason="btt_moe structure not registered")
@pytest.mark.parametrize("name", ["btt_moe", "btt_moe_norm"])
def test_btt_moe_aux_loss_averages_the_routers(name: str) -> None:
    """fidelity.md 5: the reference averages the aux loss over the MoE layers: its weight does not grow with depth."""
    model_cfg, info = MODELS["gpt2"]
    model = build_model(model_cfg, structure_config(name, layers="ffn"), info)
    model(batch(info, model_cfg)[0])
    per_layer = [layer.aux_loss() for _, layer in model.linear_layers() if layer.role.startswith("ffn")]
    assert len(per_layer) == 4 and all(a is not None for a in per_layer)
    torch.testing.assert_close(model.aux_loss(), torch.stack(per_layer).mean())
    deeper = build_model(dataclasses.replace(model_cfg, depth=4), structure_config(name, layers="ffn"), info)
    deeper(batch(info, model_cfg)[0])
    uniform = 1 + 0.1 * math.log(8) ** 2  # zero-init routers: balance term 1, z-loss log(E)^2 in every layer
    for net in (model, deeper):
        assert net.aux_loss().item() == pytest.approx(uniform, rel=1e-5)


def test_ffn_level_moe() -> None:
    model_cfg, info = MODELS["gpt2"]
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(model_cfg, ffn_experts=4, ffn_top_k=2), StructureConfig(), info)
    roles = [layer.role for _, layer in model.linear_layers()]
    assert roles.count("ffn_up") == roles.count("ffn_down") == 2 * 4  # 4 experts in each of 2 blocks
    x, y = batch(info, model_cfg)
    out, loss = model(x, y)
    assert out.shape == (4, 16, 64) and torch.isfinite(loss)
    aux = model.aux_loss()
    assert aux is not None and torch.isfinite(aux) and aux > 0


@pytest.mark.parametrize(
    "layers, match",
    [
        ("everything", r"structure\.layers='everything'.*all_but_last"),
        (["q", "mlp"], r"structure\.layers.*\['mlp'\].*ffn_up"),
        ([], r"structure\.layers.*selects nothing"),
    ],
)
def test_bad_role_selection_errors(layers, match: str) -> None:
    model_cfg, info = MODELS["gpt2"]
    with pytest.raises(StructureError, match=match):
        build_model(model_cfg, StructureConfig(layers=layers), info)


@pytest.mark.parametrize(
    "key, changes, info, match",
    [
        ("gpt2", {"width": 72}, TEXT, r"model\.head_dim"),
        ("gpt2", {}, IMAGE, r"gpt2 needs text"),
        ("gpt2", {"family": "resnet"}, TEXT, r"model\.family='resnet'.*gpt2"),
        ("gpt2", {"depth": 0}, TEXT, r"model\.depth"),
        ("vit", {"patch_size": 5}, IMAGE, r"model\.patch_size=5"),
        ("vit", {"pool": "max"}, IMAGE, r"model\.pool='max'.*cls"),
        ("vit", {}, FLAT_IMAGE, r"data\.flatten=false"),
        ("mlp", {}, TEXT, r"mlp needs image or teacher"),
    ],
)
def test_bad_model_config_errors(key: str, changes: dict, info: DataInfo, match: str) -> None:
    model_cfg, _ = MODELS[key]
    with pytest.raises(ModelConfigError, match=match):
        build_model(dataclasses.replace(model_cfg, **changes), StructureConfig(), info)


def test_sequence_longer_than_context_is_an_error() -> None:
    model_cfg, info = MODELS["gpt2"]
    model = build_model(model_cfg, StructureConfig(), info)
    with pytest.raises(ValueError, match=r"model\.context=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_structure_errors_name_the_layer() -> None:
    model_cfg, info = MODELS["gpt2"]
    with pytest.raises(StructureError, match=r"q layer #0 \(64 -> 64\).*not a known structure"):
        build_model(model_cfg, StructureConfig(name="nonexistent"), info)


def test_mse_loss_for_regression() -> None:
    model_cfg, info = MODELS["mlp_teacher"]
    model = build_model(model_cfg, StructureConfig(), info)
    x, y = batch(info, model_cfg)
    out, loss = model(x, y)
    assert math.isclose(loss.item(), F.mse_loss(out, y).item(), rel_tol=1e-6)
