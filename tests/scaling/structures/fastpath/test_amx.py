"""The AMX two-core kernel (scaling/structures/fastpath/amx.py, csrc/amx_two_core.c) and its place in the path policy.

Which plans it takes and when select_path chooses it are checked everywhere; the kernel itself only on CPUs with
AMX (skipped elsewhere, with the reason): its output and input gradient equal plain ops under bf16 autocast bit for
bit, and its weight gradients (fp32 sums over every token, rounded once) agree with autocast's to bf16 rounding.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.profiler import profile
from torch.utils.flop_counter import FlopCounterMode

from scaling.config.schema import StructureConfig
from scaling.structures import build_linear
from scaling.structures.fastpath import amx
from scaling.structures.fastpath.bmm_schedule import reference_apply
from scaling.structures.fastpath.paths import DEFAULT_POLICY, Path, PathPolicy, select_path, use_policy
from scaling.structures.tt import TensorTrain, tt2_plan
from two_core_plans import plan_and_cores

S = StructureConfig
BF16_POLICY = PathPolicy(fused_min_elements=0, bf16_gemm=True)
CASES = [  # (structure, d_in, d_out, tokens): tails of a 32-token tile, padded blocks, rank 2, Monarch's shuffle
    (S("btt"), 256, 256, 100),
    (S("btt"), 1024, 1024, 4096),
    (S("btt"), 1024, 1024, 100),  # x and dy read in place but in the last tile
    (S("btt", rank=2), 256, 256, 50),
    (S("btt", rank=4), 512, 512, 70),  # rank > 1 regrouped by transposes (p1 a multiple of 32)
    (S("btt", rank=3), 96, 96, 40),  # ... and by gathers (p1 = 12)
    (S("btt"), 128, 512, 40),
    (S("monarch", blocks=23), 512, 512, 33),
    (S("monarch", blocks=16), 256, 256, 7),
    (S("einsum", theta=[0.5, 0, 0.5, 0, 0.5, 0.5, 0]), 256, 256, 64),  # BTT rank 1's point
]
needs_amx = pytest.mark.skipif(not amx.available(), reason="the AMX kernel needs a CPU with AMX-BF16 (and its build)")


def layer_and_plan(cfg: StructureConfig, d_in: int, d_out: int):
    torch.manual_seed(0)
    layer = build_linear(cfg, d_in, d_out)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    return layer, plan_and_cores(layer)


@pytest.mark.parametrize("cfg,d_in,d_out,tokens", CASES, ids=str)
def test_btt_monarch_and_einsum_at_btt_points_are_taken(cfg, d_in, d_out, tokens):
    _, (plan, _, _) = layer_and_plan(cfg, d_in, d_out)
    assert amx.amx_shape(plan) is not None


CARRIED = [0.5, 0.5, 0, 0.5, 0.5, 0, 0]  # an Einsum point whose cores carry columns


@pytest.mark.parametrize("cfg,d", [(S("monarch", blocks=11), 128), (S("einsum", theta=CARRIED), 256)], ids=str)
def test_other_plans_stay_off_the_kernel(cfg, d):
    """Monarch whose shuffle is not a plain transpose (11 blocks of 12 at d = 128) and an Einsum point with carried
    columns are not the kernel's."""
    assert amx.amx_shape(plan_and_cores(build_linear(cfg, d, d))[0]) is None


def test_path_policy_chooses_the_kernel_only_for_bf16_gemms_one_layer_unwatched(monkeypatch):
    _, (plan, _, _) = layer_and_plan(S("btt"), 256, 256)
    x = torch.randn(512, 256)
    monkeypatch.setattr(amx, "available", lambda: True)  # the choice, on any CPU; the kernel is tested below
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert select_path(plan, x, BF16_POLICY) is Path.AMX
        assert select_path(plan, x, dataclasses.replace(BF16_POLICY, amx=False)) is Path.BMM
        assert select_path(plan, x, dataclasses.replace(BF16_POLICY, bf16_gemm=False)) is not Path.AMX
        assert select_path(plan, x, BF16_POLICY, routed=True) is Path.AMX  # routed experts too, each on its segment
        with FlopCounterMode(display=False):
            assert select_path(plan, x, BF16_POLICY) is Path.BMM  # the counter cannot see the kernel
    assert select_path(plan, x, BF16_POLICY) is not Path.AMX  # fp32
    assert PathPolicy.from_environment({"SCALING_AMX": "0"}).amx is False and DEFAULT_POLICY.amx


@needs_amx
@pytest.mark.parametrize("cfg,d_in,d_out,tokens", CASES, ids=str)
def test_kernel_equals_plain_ops_under_bf16_autocast(cfg, d_in, d_out, tokens):
    _, (plan, w0, w1) = layer_and_plan(cfg, d_in, d_out)
    x = torch.randn(tokens, d_in).bfloat16()
    w0b, w1b = (w.detach().bfloat16().requires_grad_(True) for w in (w0, w1))
    xa = x.clone().requires_grad_(True)
    y = amx.AmxTwoCoreFunction.apply(xa, w0b, w1b, plan)
    grad = torch.randn_like(y)
    y.backward(grad)
    xr, w0r, w1r = (t.detach().float().requires_grad_(True) for t in (x, w0b, w1b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yr = reference_apply(xr, w0r, w1r, plan)
    yr.float().backward(grad.float())
    assert torch.equal(y, yr) and torch.equal(xa.grad, xr.grad.bfloat16())
    for ours, theirs in ((w0b.grad, w0r.grad), (w1b.grad, w1r.grad)):  # summation orders differ: bf16 rounding
        assert ours.dtype == torch.bfloat16 and ours.shape == theirs.shape
        assert ((ours.float() - theirs).norm() / theirs.norm()).item() < 1e-3


@needs_amx
def test_pack_is_the_vnni_tile_layout():
    w = torch.randn(3, 20, 37).bfloat16().transpose(1, 2)  # strided: (3, 37, 20)
    packed = amx.pack(w)
    assert packed.shape == (3, 3, 16, 16, 2)  # N 37 -> 48 (3 x 16), K 20 -> 32 (16 pairs)
    padded = torch.zeros(3, 48, 32, dtype=torch.bfloat16)
    padded[:, :37, :20] = w
    assert torch.equal(packed, padded.view(3, 3, 16, 16, 2).permute(0, 1, 3, 2, 4))


@needs_amx
def test_pack_shifts_every_other_block_of_16_inputs_for_x_read_in_pairs():
    """Core 1 of BTT at d = 256 (blocks of 16 inputs): the kernel reads two blocks' inputs as one 32-wide window, so
    odd blocks' weights sit in the upper half of their padded K, even blocks' in the lower."""
    _, (plan, w0, _) = layer_and_plan(S("btt"), 256, 256)
    w = w0.detach().bfloat16()
    blocks, n, k = w.shape
    assert k == 16 and amx._library().amx_two_core_x_in_pairs(amx._shape(plan, 64))
    padded = torch.zeros(blocks, n, 32, dtype=torch.bfloat16)
    padded[0::2, :, :16], padded[1::2, :, 16:] = w[0::2], w[1::2]
    expected = padded.view(blocks, n // 16, 16, 16, 2).permute(0, 1, 3, 2, 4)
    assert torch.equal(amx.pack_core1(w, amx._shape(plan, 64)), expected)
    assert torch.equal(amx.pack(w, shift=16), expected)


@needs_amx
def test_layers_take_the_kernel_and_agree_with_the_bmm_path():
    layer, _ = layer_and_plan(S("btt"), 512, 512)
    x = torch.randn(600, 512)
    grads = {}
    for name, policy in (("amx", BF16_POLICY), ("bmm", dataclasses.replace(BF16_POLICY, amx=False))):
        layer.zero_grad(set_to_none=True)
        with use_policy(policy), torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        y.float().square().mean().backward()
        grads[name] = (y, [p.grad.clone() for p in layer.parameters()])
    assert torch.equal(grads["amx"][0], grads["bmm"][0])
    for ours, theirs in zip(grads["amx"][1], grads["bmm"][1]):
        assert ((ours - theirs).norm() / theirs.norm()).item() < 1e-2


@needs_amx
@pytest.mark.parametrize("rows,width", [(1, 5), (3, 37), (1000, 1024)])
def test_row_dots_are_the_exact_products_summed_in_fp32(rows, width):
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(rows, width, generator=gen).bfloat16() for _ in range(2))
    exact = (a.double() * b.double()).sum(-1)
    got = amx.row_dots(a, b)
    assert got.dtype == torch.float32 and got.shape == (rows,)
    scale = (a.double() * b.double()).abs().sum(-1)
    assert ((got.double() - exact).abs() <= 1e-6 * scale).all()  # fp32 summation error only


@needs_amx
@pytest.mark.parametrize("tokens,k,width", [(1, 1, 3), (37, 2, 20), (300, 3, 1024)])
def test_combine_sums_each_tokens_slots_in_fp32_and_rounds_once(tokens, k, width):
    gen = torch.Generator().manual_seed(tokens)
    flat = torch.stack([torch.randperm(5, generator=gen)[:k] for _ in range(tokens)]).reshape(-1)
    order = torch.argsort(flat, stable=True)
    slots = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel())).view(tokens, k)
    rows = torch.randn(tokens * k, width, generator=gen).bfloat16()
    weights = torch.rand(tokens * k, generator=gen).bfloat16().float()
    for w in (None, weights):
        source = rows.double() if w is None else rows.double() * w.double()[:, None]
        exact = torch.zeros(tokens, width, dtype=torch.float64).index_add_(0, order // k, source)
        magnitude = torch.zeros(tokens, width, dtype=torch.float64).index_add_(0, order // k, source.abs())
        got = amx.combine(rows, slots, w)
        assert got.dtype == torch.bfloat16
        # an fp32 sum of exact products, rounded to bf16 once: within half a bf16 step of the exact sum
        assert ((got.double() - exact).abs() <= 2 ** -8 * exact.abs() + 1e-6 * magnitude).all()


@needs_amx
def test_routed_experts_take_the_kernel_and_agree_with_the_bmm_path(monkeypatch):
    """BTT-MoE under bf16 autocast: each routed expert runs the kernel on its segment of the sorted slots; the layer's
    output equals the bmm path's bit for bit, its gradients (router's included) agree to bf16 rounding."""
    torch.manual_seed(0)
    layer = build_linear(S("btt_moe", experts=4, top_k=2), 256, 256)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x = torch.randn(300, 256)
    calls = []
    real_forward = amx.forward
    monkeypatch.setattr(amx, "forward", lambda x, *rest, **kw: calls.append(x.shape[0]) or real_forward(x, *rest, **kw))
    results = {}
    for name, policy in (("amx", BF16_POLICY), ("bmm", dataclasses.replace(BF16_POLICY, amx=False))):
        layer.zero_grad(set_to_none=True)
        with use_policy(policy), torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        (y.float().square().mean() + layer.aux_loss()).backward()
        results[name] = (y, [p.grad.clone() for p in layer.parameters()])
    assert sum(calls) == 300 * 2  # every (token, expert) slot once, in the AMX run only
    assert torch.equal(results["amx"][0], results["bmm"][0])
    for ours, theirs in zip(results["amx"][1], results["bmm"][1]):
        assert ((ours - theirs).norm() / theirs.norm()).item() < 1e-2


def two_cores(layer) -> list[torch.Tensor]:
    """A 2-core TT's cores (Kronecker's factors as rank-1 cores), as tt_apply takes them."""
    if isinstance(layer, TensorTrain):
        return layer.cores()
    return [a.view(a.shape[0], 1, 1, a.shape[1]) for a in layer.factors()]


def test_two_core_tensor_trains_have_a_plan_only_where_it_costs_the_analytic_flops():
    for cfg, d in ((S("kron"), 256), (S("tt", rank=4), 512)):
        layer = build_linear(cfg, d, d)
        plan = tt2_plan(*(c.shape for c in two_cores(layer)))
        assert plan is not None and amx.amx_shape(plan) is not None
        assert plan.flops_per_token() == layer.flops_per_token()
    for cfg in (S("kron"), S("tt", rank=4)):  # (16, 32) -> (32, 64): G_1 first would cost more
        assert tt2_plan(*(c.shape for c in two_cores(build_linear(cfg, 512, 2048)))) is None


@needs_amx
@pytest.mark.parametrize("cfg,d", [(S("kron"), 256), (S("tt", rank=4), 512), (S("tt", rank=3), 144)], ids=str)
def test_two_core_tensor_trains_take_the_kernel_under_bf16_and_match_the_dense_product(cfg, d, monkeypatch):
    torch.manual_seed(0)
    layer = build_linear(cfg, d, d)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    calls = []
    real_forward = amx.forward
    monkeypatch.setattr(amx, "forward", lambda x, *rest, **kw: calls.append(x.shape[0]) or real_forward(x, *rest, **kw))
    x = torch.randn(2, 150, d)
    with use_policy(BF16_POLICY), torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    y.float().square().sum().backward()
    assert calls == [300] and y.dtype == torch.bfloat16
    params = [p.detach().double().requires_grad_(True) for p in layer.parameters()]
    g0, g1 = (p.view(p.shape[0], 1, 1, p.shape[1]) for p in params) if cfg.name == "kron" else params
    dense = torch.einsum("asi,csj->acij", g0[:, :, 0], g1[:, 0]).reshape(d, d)  # W[(j1 j2), (i1 i2)]
    ref = x.double() @ dense.T
    ref.square().sum().backward()
    assert ((y.double() - ref).norm() / ref.norm()).item() < 1e-2
    for ours, theirs in zip((p.grad for p in layer.parameters()), (p.grad for p in params)):
        assert ((ours.double() - theirs).norm() / theirs.norm()).item() < 2e-2


@needs_amx
def test_kernel_copies_no_activation():
    """The whole layer runs in the kernel's pass over the tokens: no activation-sized copy in forward or backward."""
    layer, _ = layer_and_plan(S("btt"), 256, 256)
    x = torch.randn(512, 256).bfloat16().requires_grad_(True)
    counts = []
    with use_policy(BF16_POLICY), torch.autocast("cpu", dtype=torch.bfloat16):
        for phase in ("forward", "backward"):
            with profile(record_shapes=True) as prof:
                if phase == "forward":
                    y = layer(x)
                else:
                    y.backward(torch.randn_like(y))
            counts.append(sum(1 for e in prof.events() if e.name == "aten::copy_" and e.input_shapes
                              and e.input_shapes[0] and torch.Size(e.input_shapes[0]).numel() >= 512 * 64))
    assert counts == [0, 0]
