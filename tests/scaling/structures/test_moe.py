"""Top-k routing, the BTT-MoE structure and the FFN-level MoE, each against a plain all-experts reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from scaling.config.schema import StructureConfig
from scaling.structures import StructuredLinear, StructureError, build_linear, spectral_std
from scaling.structures.btt_moe import BTTMoE
from scaling.models.moe_ffn import MoEFFN
from scaling.structures.routing import route

DENSE = StructureConfig(name="dense")


def dense_factory(role: str, d_in: int, d_out: int) -> StructuredLinear:
    layer = build_linear(DENSE, d_in, d_out)
    layer.role = role
    return layer


def btt_moe(d_in: int, d_out: int, experts: int = 4, top_k: int = 2, router_std: float = 1.0) -> BTTMoE:
    torch.manual_seed(0)
    layer = build_linear(StructureConfig(name="btt_moe", experts=experts, top_k=top_k), d_in, d_out)
    assert isinstance(layer, BTTMoE)
    with torch.no_grad():
        layer.router.weight.normal_(0.0, router_std)  # a trained-looking router, so tokens spread unevenly
    return layer


def dense_gates(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """(N, E) gate matrix of the reference: softmax over each token's top-k logits, zero elsewhere."""
    top, idx = logits.topk(top_k, dim=-1)
    return torch.zeros_like(logits).scatter(-1, idx, top.softmax(dim=-1))


def grads(module: nn.Module, x: torch.Tensor, out: torch.Tensor, aux: torch.Tensor | None) -> dict[str, torch.Tensor]:
    weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    loss = (out * weights).sum() + (0 if aux is None else aux)
    module.zero_grad()
    x.grad = None
    loss.backward()
    found = {name: (p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in module.named_parameters()}
    return found | {"x": x.grad}


# --- routing ------------------------------------------------------------------------------------------------

def test_route_picks_top_k_and_softmaxes_over_them():
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0], [0.0, 3.0, 0.5, 2.9]])
    r = route(logits, top_k=2)
    assert r.experts.tolist() == [[0, 2], [1, 3]]
    expected = torch.tensor([[1.0, math.exp(-1.0)], [1.0, math.exp(-0.1)]])
    expected = expected / expected.sum(dim=-1, keepdim=True)
    torch.testing.assert_close(r.gates, expected, rtol=1e-5, atol=0)


def test_aux_loss_is_one_plus_z_loss_for_uniform_routing():
    # Zero logits (the router's init): P_e = 1/E, so E * sum_e P_e f_e = 1 whatever f; logsumexp = log E.
    for experts in (4, 8, 16):
        aux = route(torch.zeros(32, experts), top_k=2).aux_loss
        assert aux.item() == pytest.approx(1 + 0.1 * math.log(experts) ** 2, rel=1e-5)


def test_aux_loss_penalises_collapsed_routing():
    # Every token sends (nearly) all probability to experts 0 and 1: P = f = (1/2, 1/2, 0, ...), so E/2.
    experts, big = 8, 30.0
    logits = torch.zeros(16, experts)
    logits[:, :2] = big
    aux = route(logits, top_k=2).aux_loss
    z = (big + math.log(2)) ** 2  # logsumexp of (big, big, 0 x 6) ~ big + log 2
    assert aux.item() == pytest.approx(experts / 2 + 0.1 * z, rel=1e-4)


# --- BTT-MoE ------------------------------------------------------------------------------------------------

def btt_moe_reference(layer: BTTMoE, x: torch.Tensor) -> torch.Tensor:
    """All experts on all tokens, the intermediate z masked by the (N, E) gates; x: (N, d_in)."""
    lay = layer.layout
    g = dense_gates(x @ layer.router.weight.T, layer.top_k)
    z = torch.einsum("nia,eiaj->neji", x.reshape(-1, lay.m1, lay.m0), layer.W0)  # (N, E, n0, m1)
    y = torch.einsum("neji,ejio->njo", z * g[:, :, None, None], layer.W1)  # (N, n0, n1)
    return y.reshape(-1, layer.d_out)


@pytest.mark.parametrize("d_in,d_out,experts,top_k", [(64, 64, 4, 2), (64, 256, 8, 2), (36, 144, 16, 3)])
def test_btt_moe_matches_the_all_experts_reference_in_value_and_gradient(d_in, d_out, experts, top_k):
    layer = btt_moe(d_in, d_out, experts, top_k)
    x = torch.randn(40, d_in, requires_grad=True)
    y = layer(x)
    got = grads(layer, x, y, layer.aux_loss())
    y_ref = btt_moe_reference(layer, x)
    aux_ref = route(x @ layer.router.weight.T, top_k).aux_loss
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    want = grads(layer, x, y_ref, aux_ref)
    assert set(got) == {"W0", "W1", "router.weight", "x"}
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)
    assert got["router.weight"].abs().sum() > 0  # the router learns through the gates and the aux loss


def test_btt_moe_with_every_expert_is_a_rank_e_btt():
    # top_k = E and a zero router: every gate is 1/E, so E * y is the rank-E BTT whose rank slices are the experts.
    experts = 4
    torch.manual_seed(0)
    layer = build_linear(StructureConfig(name="btt_moe", experts=experts, top_k=experts), 64, 256)
    btt = build_linear(StructureConfig(name="btt", rank=experts), 64, 256)
    lay = layer.layout
    with torch.no_grad():  # BTT: W0[i1, i0, j0 * r + e], W1[j0, i1 * r + e, j1]
        btt.W0.copy_(layer.W0.permute(1, 2, 3, 0).reshape(lay.m1, lay.m0, lay.n0 * experts))
        btt.W1.copy_(layer.W1.permute(1, 2, 0, 3).reshape(lay.n0, lay.m1 * experts, lay.n1))
    x = torch.randn(2, 5, 64)
    torch.testing.assert_close(experts * layer(x), btt(x), rtol=1e-4, atol=1e-5)


def test_btt_moe_flops_count_router_and_k_of_e_experts():
    experts, top_k = 8, 2
    layer = btt_moe(64, 256, experts, top_k)
    rank_e = build_linear(StructureConfig(name="btt", rank=experts), 64, 256)
    assert layer.flops_per_token() == 2 * 64 * experts + top_k * rank_e.flops_per_token() // experts
    x = torch.randn(3, 10, 64)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        layer(x)
    assert counter.get_total_flops() / 30 == pytest.approx(layer.flops_per_token(), rel=0.01)
    assert layer.num_params() == rank_e.num_params() + 64 * experts


def test_btt_moe_init_and_fan_ins_are_rank_1_btt():
    torch.manual_seed(0)
    layer = build_linear(StructureConfig(name="btt_moe", experts=8, top_k=2), 256, 1024)
    rank1 = build_linear(StructureConfig(name="btt", rank=1), 256, 1024)
    ours = [(f.name, f.fan_in, f.fan_out) for f in layer.factor_specs()]
    assert ours == [(f.name, f.fan_in, f.fan_out) for f in rank1.factor_specs()]
    for spec in layer.factor_specs():
        std = getattr(layer, spec.name).std().item()
        assert std == pytest.approx(spectral_std(spec.fan_in, spec.fan_out), rel=0.05)
    assert torch.count_nonzero(layer.router.weight) == 0
    assert layer.aux_loss() is None
    layer(torch.randn(8, 256))
    assert layer.aux_loss().item() == pytest.approx(1 + 0.1 * math.log(8) ** 2, rel=1e-5)


def test_parametrization_gives_the_router_the_zero_init_gate_rule():
    from scaling.mup.parametrization import ParamRule, param_rules

    def net(width: int) -> nn.Module:
        return nn.ModuleDict({"layer": build_linear(StructureConfig(name="btt_moe"), width, width)})

    rules = param_rules(net(256), net(64), "structure_aware")
    assert rules["layer.router.weight"] == ParamRule(0.0, 64 / 256, True)
    # rank-1 BTT factors: lr_f = d_in_base / (2 * fan_in_f), fan-ins m0 = 16 and m1 = 16 at width 256
    assert rules["layer.W0"] == ParamRule(spectral_std(16, 16), 64 / (2 * 16), True)
    assert rules["layer.W1"] == ParamRule(spectral_std(16, 16), 64 / (2 * 16), True)


@pytest.mark.parametrize(
    "fields,pattern",
    [
        ({"experts": 4, "top_k": 5}, r"structure\.top_k=5 must be between 1 and structure\.experts=4"),
        ({"experts": 0}, r"structure\.experts=0 must be >= 1"),
        ({"rank": 4}, r"does not use structure\.rank=4.*unset structure\.rank"),
        ({"cores": 3}, r"structure\.cores=3; set structure\.cores=2"),
    ],
)
def test_btt_moe_bad_settings_name_the_field(fields, pattern):
    with pytest.raises(StructureError, match=pattern):
        build_linear(StructureConfig(name="btt_moe", **fields), 64, 64)


def test_btt_moe_width_without_clean_blocks_names_nearest_widths():
    with pytest.raises(StructureError, match=r"btt_moe.*layout=paper.*d_in=61.*use a width such as 60 or 64"):
        build_linear(StructureConfig(name="btt_moe"), 61, 64)  # 63 = 3 x 21 under the greedy split
    with pytest.raises(StructureError, match=r"btt_moe.*layout=balanced.*d_in=61.*use a width such as 60 or 63"):
        build_linear(StructureConfig(name="btt_moe", layout="balanced"), 61, 64)


# --- FFN-level MoE ------------------------------------------------------------------------------------------

def moe_ffn(d: int = 16, hidden: int = 64, experts: int = 4, top_k: int = 2, factory=dense_factory) -> MoEFFN:
    torch.manual_seed(0)
    moe = MoEFFN(d, hidden, experts, top_k, factory)
    with torch.no_grad():
        moe.router.weight.normal_()  # a trained-looking router, so tokens spread unevenly
    return moe


def moe_ffn_reference(moe: MoEFFN, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, weighted by the (N, E) gates."""
    g = dense_gates(x @ moe.router.weight.T, moe.top_k)
    outs = torch.stack([e.ffn_down(F.gelu(e.ffn_up(x))) for e in moe.experts], dim=1)  # (N, E, d)
    return (outs * g[:, :, None]).sum(dim=1)


@pytest.mark.parametrize("experts,top_k", [(4, 2), (8, 1), (3, 3)])
def test_moe_ffn_matches_the_all_experts_reference_in_value_and_gradient(experts, top_k):
    moe = moe_ffn(experts=experts, top_k=top_k)
    x = torch.randn(2, 25, 16, requires_grad=True)
    y = moe(x)
    assert y.shape == x.shape
    got = grads(moe, x, y, moe.aux_loss())
    y_ref = moe_ffn_reference(moe, x.reshape(-1, 16)).reshape(x.shape)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    want = grads(moe, x, y_ref, route(x.reshape(-1, 16) @ moe.router.weight.T, top_k).aux_loss)
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)


def test_moe_ffn_skips_experts_without_tokens():
    moe = moe_ffn(experts=6, top_k=2)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[[1, 4]] = 5.0  # with positive inputs every token picks experts 1 and 4
    x = torch.rand(30, 16, requires_grad=True)
    y = moe(x)
    got = grads(moe, x, y, None)
    torch.testing.assert_close(y, moe_ffn_reference(moe, x), rtol=1e-4, atol=1e-5)
    for e, expert in enumerate(moe.experts):
        used = got[f"experts.{e}.ffn_up.weight"].abs().sum() > 0
        assert used == (e in (1, 4))


def test_moe_ffn_experts_are_structured_layers_built_in_registration_order():
    built: list[StructuredLinear] = []

    def factory(role: str, d_in: int, d_out: int) -> StructuredLinear:
        layer = build_linear(StructureConfig(name="btt"), d_in, d_out)
        layer.role = role
        built.append(layer)
        return layer

    moe = MoEFFN(16, 64, 3, 2, factory)
    registered = [m for m in moe.modules() if isinstance(m, StructuredLinear)]
    assert [id(m) for m in registered] == [id(m) for m in built]
    assert [m.role for m in registered] == ["ffn_up", "ffn_down"] * 3
    assert [(m.d_in, m.d_out) for m in registered] == [(16, 64), (64, 16)] * 3


def test_moe_ffn_flops_count_router_and_k_experts():
    d, hidden, experts, top_k = 16, 64, 4, 2
    moe = moe_ffn(d, hidden, experts, top_k)
    assert moe.flops_per_token() == 2 * d * experts + top_k * 2 * (2 * d * hidden)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        moe(torch.randn(4, 10, d))
    assert counter.get_total_flops() / 40 == pytest.approx(moe.flops_per_token(), rel=0.01)


def test_moe_ffn_router_starts_at_zero_and_aux_loss_is_per_forward():
    moe = MoEFFN(16, 32, 8, 2, dense_factory)
    assert torch.count_nonzero(moe.router.weight) == 0
    assert moe.aux_loss() is None
    moe(torch.randn(5, 16))
    assert moe.aux_loss().item() == pytest.approx(1 + 0.1 * math.log(8) ** 2, rel=1e-5)


def test_moe_ffn_bad_sizes_name_the_model_fields():
    with pytest.raises(StructureError, match=r"model\.ffn_top_k=3 must be between 1 and model\.ffn_experts=2"):
        MoEFFN(16, 32, 2, 3, dense_factory)
