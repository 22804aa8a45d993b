"""Structured linear layers (low_rank, kron, tt, monarch, btt, btt_norm) case by case: published counts, FLOPs, fan-ins,
init and each one's defining math. What every registered structure must satisfy (shapes, parameters, FLOPs against the
counter, init std, gradients, fast vs reference path, meta build) is checked once, generically, in test_contract.py."""

from __future__ import annotations

import functools
import math
import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from scaling.config.schema import StructureConfig
from scaling.structures import REGISTRY, StructureError, StructuredLinear, build_linear, spectral_std
from scaling.structures.btt import BlockTensorTrain
from scaling.structures.dense import Dense
from scaling.structures.factorize import (
    clean_factors, divisors, greedy_factors, near_equal_factors, nearest_valid, pad_last,
)
from scaling.structures.kron import Kronecker
from scaling.structures.low_rank import LowRank
from scaling.structures.monarch import Monarch
from scaling.structures.fastpath.paths import PathPolicy, use_policy
from scaling.structures.tt import TensorTrain

S = StructureConfig
# (config, d_in, d_out): square, wider and narrower layers of every structure.
CASES = [
    (S("low_rank"), 64, 64),
    (S("low_rank", rank=5), 64, 128),
    (S("low_rank", rank_frac=0.25), 96, 48),
    (S("kron"), 64, 64),
    (S("kron"), 64, 128),
    (S("kron", cores=3), 96, 48),
    (S("tt", rank=4), 64, 64),
    (S("tt", rank=3), 64, 128),
    (S("tt", cores=3, rank=2), 96, 48),
    (S("monarch"), 64, 64),
    (S("monarch", blocks=4), 64, 128),
    (S("monarch"), 96, 48),  # b = 10 does not divide 96 or 48: zero-padded
    (S("btt"), 64, 64),
    (S("btt", rank=4), 64, 128),
    (S("btt", rank=2), 96, 48),
    (S("btt_norm", rank=2), 64, 64),
    (S("btt_norm", rank=3), 96, 48),
]
IDS = [f"{c.name}-r{c.rank}-{di}x{do}" for c, di, do in CASES]
MINE = ["low_rank", "kron", "tt", "monarch", "btt", "btt_norm"]


def build(cfg: StructureConfig, d_in: int, d_out: int, bias: bool = False, seed: int = 0) -> StructuredLinear:
    torch.manual_seed(seed)
    return build_linear(cfg, d_in, d_out, bias)


def applied_matrix(layer: StructuredLinear) -> torch.Tensor:
    """The (d_out, d_in) matrix W with layer(x) = x W^T + b, read off by applying the layer to the identity."""
    with torch.no_grad():
        out = layer(torch.eye(layer.d_in))
        if layer.bias is not None:
            out = out - layer.bias
    return out.T


def matrix_from_factors(layer: StructuredLinear) -> torch.Tensor:
    """The (d_out, d_in) matrix built directly from the factors by each structure's defining formula."""
    with torch.no_grad():
        if isinstance(layer, LowRank):
            return layer.V @ layer.U
        if isinstance(layer, Kronecker):
            return functools.reduce(torch.kron, layer.factors())
        if isinstance(layer, TensorTrain):  # W[(j..), (i..)] = prod_k G_k[j_k, s_k, s_{k-1}, i_k]
            full = torch.ones(1, 1, 1)  # (M, N, r)
            for core in layer.cores():
                m, s, _, n = core.shape
                full = torch.einsum("MNr,msrn->MmNns", full, core).reshape(full.shape[0] * m, full.shape[1] * n, s)
            return full[..., 0]
        if isinstance(layer, Monarch):
            return monarch_matrix(layer)
        if isinstance(layer, BlockTensorTrain):
            lay = layer.layout
            w0, w1 = layer.weights()
            w0 = w0.reshape(lay.m1, lay.m0, lay.n0, lay.rank)
            w1 = w1.reshape(lay.n0, lay.m1, lay.rank, lay.n1)
            full = torch.einsum("abjp,japk->jkab", w0, w1)  # W[(j0, j1), (i1, i0)]
            return full.reshape(lay.n0 * lay.n1, lay.m1 * lay.m0)
    raise AssertionError(f"no reference matrix for {type(layer).__name__}")


def monarch_matrix(layer: Monarch) -> torch.Tensor:
    """P L P^T R as dense matrices, cut to (d_out, d_in): R, L block-diagonal, P^T the stride-b read of the middle
    (g[l, r] = h_flat[r b + l]), P the output shuffle (y[s b + l] = o[l, s])."""
    b, mid, out_blk = layer.layout.blocks, layer.layout.mid, layer.layout.out_blk
    right = torch.block_diag(*[r.T for r in layer.R])
    left = torch.block_diag(*[blk.T for blk in layer.L])
    p_mid = torch.zeros(b * mid, b * mid)
    for blk in range(b):
        for r in range(mid):
            p_mid[blk * mid + r, r * b + blk] = 1.0
    p_out = torch.zeros(b * out_blk, b * out_blk)
    for blk in range(b):
        for o in range(out_blk):
            p_out[o * b + blk, blk * out_blk + o] = 1.0
    return (p_out @ left @ p_mid @ right)[: layer.d_out, : layer.d_in]


# (fan_in, fan_out) of each factor in application order, from the reference's fan-in table:
# low-rank U: d_in, V: r; Kron/TT core: n_k r_{k-1}; Monarch: d_in / b; BTT W0: m0, W1: r m1.
FANS = [
    (S("low_rank", rank=5), 64, 128, [(64, 5), (5, 128)]),
    (S("kron"), 64, 128, [(8, 8), (8, 16)]),
    (S("tt", rank=3), 64, 128, [(8, 8 * 3), (3 * 8, 16)]),
    (S("tt", cores=3, rank=2), 96, 48, [(4, 2 * 2), (2 * 4, 4 * 2), (2 * 6, 6)]),  # (4, 4, 6) -> (2, 4, 6)
    (S("tt", cores=3, rank=2, layout="balanced"), 96, 48, [(4, 3 * 2), (2 * 4, 4 * 2), (2 * 6, 4)]),  # -> (3, 4, 4)
    (S("monarch", blocks=4), 64, 128, [(16, 16), (16, 32)]),
    (S("btt", rank=4), 64, 128, [(8, 4 * 8), (4 * 8, 16)]),
    (S("btt"), 512, 512, [(16, 16), (32, 32)]),  # paper: W0 (32, 16, 16), W1 (16, 32, 32)
    (S("btt", layout="balanced"), 512, 512, [(32, 16), (16, 32)]),  # W0 (16, 32, 16), W1 (16, 16, 32)
]


@pytest.mark.parametrize("cfg,d_in,d_out,fans", FANS, ids=[f"{c.name}-{c.cores}" for c, *_ in FANS])
def test_factor_fan_ins_follow_the_reference(cfg, d_in, d_out, fans):
    assert [(s.fan_in, s.fan_out) for s in build(cfg, d_in, d_out).factor_specs()] == fans


# Published parameter counts, written out from the formulas (not read off the layer's layout).
PARAMS = {
    ("low_rank", 64, 64): 8 * (64 + 64),  # default r = ceil(sqrt(64)) = 8
    ("low_rank", 64, 128): 5 * (64 + 128),
    ("low_rank", 96, 48): 12 * (96 + 48),  # r = ceil(0.25 * 48)
    ("kron", 64, 64): 2 * 64,  # square 2-core Kronecker: 2 d
    ("kron", 64, 128): 8 * 8 + 8 * 16,
    ("kron", 96, 48): 4 * 2 + 4 * 4 + 6 * 6,  # greedy: 96 = 4*4*6, 48 = 2*4*6
    ("tt", 64, 64): 2 * 4 * 64,  # square 2-core TT: 2 r d
    ("tt", 64, 128): 3 * (8 * 8 + 8 * 16),
    ("tt", 96, 48): 4 * 2 * 2 + 2 * 4 * 4 * 2 + 2 * 6 * 6,
    ("monarch", 64, 64): 2 * 64**2 // 8,  # square, b | d: 2 d^2 / b
    ("monarch", 64, 128): 4 * 16 * (16 + 32),
    ("monarch", 96, 48): 10 * 5 * (10 + 5),  # padded to 100 -> 50 with b = 10
    ("btt", 64, 64): 2 * 64**1.5,  # square rank 1: 2 d^1.5
    ("btt", 64, 128): 4 * (8 * 64 + 8 * 128),  # r (n0 d_in + m1 d_out)
    ("btt", 96, 48): 2 * (4 * 96 + 12 * 48),  # 96 = 12 blocks of 8 -> 48 = 4 blocks of 12
    ("btt_norm", 64, 64): 2 * 2 * 64**1.5 + 2,  # + two gammas
    ("btt_norm", 96, 48): 3 * (4 * 96 + 12 * 48) + 2,
}


@pytest.mark.parametrize("cfg,d_in,d_out", CASES, ids=IDS)
def test_param_count_matches_formula(cfg, d_in, d_out):
    layer = build(cfg, d_in, d_out)
    assert layer.num_params() == PARAMS[(cfg.name, d_in, d_out)]
    assert build(cfg, d_in, d_out, bias=True).num_params() == layer.num_params() + d_out


def test_flop_formulas_at_the_published_points():
    d = 1024
    assert build(S("kron"), d, d).flops_per_token() == 2 * 2 * d**1.5  # 2 d^1.5 MACs
    assert build(S("tt", rank=4), d, d).flops_per_token() == 2 * 2 * 4 * d**1.5
    assert build(S("btt", rank=2), d, d).flops_per_token() == 2 * 2 * 2 * d**1.5
    assert build(S("monarch", blocks=4), d, d).flops_per_token() == 2 * 2 * d**2 // 4
    assert build(S("low_rank", rank=16), d, d).flops_per_token() == 2 * 16 * 2 * d


THREE_CORES = [(S("kron", cores=3), 96, 48), (S("tt", cores=3, rank=2), 96, 48)]


@pytest.mark.parametrize("cfg,d_in,d_out", THREE_CORES, ids=[c.name for c, _, _ in THREE_CORES])
def test_three_core_flops_match_flop_counter(cfg, d_in, d_out):
    """The contract suite counts the 2-core presets; the 3-core chain takes its own path."""
    layer = build(cfg, d_in, d_out, bias=True)
    tokens = 24
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(2, tokens // 2, d_in))
    assert counter.get_total_flops() / tokens == pytest.approx(layer.flops_per_token(), rel=0.01)


AUTOCAST_CASES = CASES + [
    (S("einsum", theta=[0.5, 0, 0.5, 0, 0.5, 0.5, 0]), 64, 64),
    (S("btt_moe", experts=4, top_k=2), 64, 96),
]


@pytest.mark.parametrize("cfg,d_in,d_out", AUTOCAST_CASES, ids=[f"{c.name}-{di}x{do}" for c, di, do in AUTOCAST_CASES])
def test_trains_under_bf16_autocast_on_the_cpu(cfg, d_in, d_out):
    """train.precision=bf16 on the CPU: a bf16 input (what the previous autocast op returns) and fp32 factors
    give the fp32 output to bf16 accuracy, and gradients reach every factor (with the fused Functions on for
    calls this small: they take bf16 autocast too)."""
    layer = build(cfg, d_in, d_out)
    x = torch.randn(7, d_in)
    with use_policy(PathPolicy(fused_min_elements=0)):
        want = layer(x)
        xb = x.bfloat16().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = layer(xb)
        got.float().square().sum().backward()
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.03 * want.abs().max().item())
    assert xb.grad.dtype == torch.bfloat16 and torch.isfinite(xb.grad).all() and xb.grad.abs().sum() > 0
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("cfg,d_in,d_out", CASES, ids=IDS)
def test_output_is_the_documented_matrix(cfg, d_in, d_out):
    layer = build(cfg, d_in, d_out, bias=True)
    with torch.no_grad():
        layer.bias.normal_()
    matrix = applied_matrix(layer)
    torch.testing.assert_close(matrix, matrix_from_factors(layer), rtol=1e-4, atol=1e-5)
    x = torch.randn(3, 4, d_in)
    torch.testing.assert_close(layer(x), x @ matrix.T + layer.bias, rtol=1e-4, atol=1e-5)


def copy_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    with torch.no_grad():
        dst.copy_(src.reshape(dst.shape))


def blockdiag_butterfly(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """Standard Monarch as the reference code computes it (HazyResearch's blockdiag_butterfly_multiply, version 2),
    written fresh: w1 (k, q, p) and w2 (l, s, r) with k p = d_in and l r = k q."""
    k, q, p = w1.shape
    n_l, s, r = w2.shape
    out1 = torch.einsum("kqp,nkp->nkq", w1, x.reshape(-1, k, p)).reshape(-1, r, n_l).transpose(1, 2)  # (kq)->(rl)->l r
    out2 = torch.einsum("lsr,nlr->nls", w2, out1)
    return out2.transpose(1, 2).reshape(-1, s * n_l)  # l s -> (s l)


@pytest.mark.parametrize("d_in,d_out,b", [(256, 256, 16), (256, 256, 4), (64, 128, 8), (1024, 1024, 32), (96, 48, 10)])
def test_monarch_weight_copy_matches_an_independent_p_l_pt_r(d_in, d_out, b):
    """fidelity.md 3: block l's output s lands on feature s b + l, as in the reference code, to float32 rounding."""
    monarch = build(S("monarch", blocks=b), d_in, d_out, seed=1)
    lay = monarch.layout
    torch.manual_seed(2)
    w1 = torch.randn(b, lay.mid, lay.in_blk) / lay.in_blk**0.5  # (blocks, out, in), as the reference stores them
    w2 = torch.randn(b, lay.out_blk, lay.mid) / lay.mid**0.5
    copy_into(monarch.R, w1.transpose(1, 2))
    copy_into(monarch.L, w2.transpose(1, 2))
    x = torch.randn(10, d_in)
    want = blockdiag_butterfly(pad_last(x, b * lay.in_blk), w1, w2)[:, :d_out]
    torch.testing.assert_close(monarch(x), want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("d_in,d_out,b", [(64, 64, 8), (64, 128, 8), (128, 64, 8), (100, 200, 10)])
def test_monarch_is_rank_one_btt_followed_by_the_output_shuffle(d_in, d_out, b):
    """With the same cores, Monarch = P (rank-1 BTT with m1 = n0 = b): monarch(x)[s b + l] = btt(x)[l out_blk + s]."""
    monarch = build(S("monarch", blocks=b), d_in, d_out, seed=1)
    btt = build(S("btt", rank=1, layout="balanced"), d_in, d_out, seed=2)  # balanced: the smaller factor is m1
    assert (btt.layout.m1, btt.layout.n0) == (b, b)
    assert monarch.R.shape == btt.W0.shape and monarch.L.shape == btt.W1.shape
    copy_into(btt.W0, monarch.R)
    copy_into(btt.W1, monarch.L)
    x = torch.randn(10, d_in)
    out_blk = monarch.layout.out_blk
    shuffled = btt(x).view(10, b, out_blk).transpose(1, 2).reshape(10, d_out)
    torch.testing.assert_close(monarch(x), shuffled)
    assert not torch.allclose(monarch(x), btt(x))  # the shuffle is not the identity
    assert monarch.flops_per_token() == btt.flops_per_token()
    assert monarch.num_params() == btt.num_params()


@pytest.mark.parametrize("cores,d_in,d_out", [(2, 64, 128), (3, 96, 48), (4, 256, 256)])
def test_kron_is_rank_one_tt(cores, d_in, d_out):
    kron = build(S("kron", cores=cores), d_in, d_out, seed=1)
    tt = build(S("tt", cores=cores, rank=1), d_in, d_out, seed=2)
    for factor, core in zip(kron.factors(), tt.cores()):
        copy_into(core, factor)
    x = torch.randn(10, d_in)
    torch.testing.assert_close(kron(x), tt(x))
    assert kron.flops_per_token() == tt.flops_per_token()
    assert kron.num_params() == tt.num_params()
    assert [(s.fan_in, s.fan_out) for s in kron.factor_specs()] == [(s.fan_in, s.fan_out) for s in tt.factor_specs()]


def test_low_rank_is_the_dense_product():
    low = build(S("low_rank", rank=6), 40, 24, bias=True)
    dense = Dense(40, 24, bias=True)
    copy_into(dense.weight, low.V @ low.U)
    copy_into(dense.bias, torch.randn(24))
    copy_into(low.bias, dense.bias)
    x = torch.randn(3, 7, 40)
    torch.testing.assert_close(low(x), dense(x))


def test_btt_norm_caps_factor_rms_at_the_init_scale():
    torch.manual_seed(0)
    cfg = S("btt_norm", rank=2)
    norm = build(cfg, 64, 96)
    plain = build(S("btt", rank=2), 64, 96)
    sigmas = [spectral_std(s.fan_in, s.fan_out) for s in norm.factor_specs()]
    copy_into(plain.W0, norm.W0)
    copy_into(plain.W1, norm.W1)
    x = torch.randn(8, 64)
    # below the cap (RMS 0.5 sigma) the factors are used as they are
    with torch.no_grad():
        for w, s in [(norm.W0, sigmas[0]), (norm.W1, sigmas[1])]:
            w.mul_(0.5 * s / w.square().mean().sqrt())
    copy_into(plain.W0, norm.W0)
    copy_into(plain.W1, norm.W1)
    torch.testing.assert_close(norm(x), plain(x))
    # above the cap the effective factor has RMS gamma * sigma, so scaling a factor up changes nothing
    with torch.no_grad():
        norm.W0.mul_(30.0)
        norm.W1.mul_(7.0)
        norm.gamma0.fill_(1.5)
    w0, w1 = norm.weights()
    assert w0.square().mean().sqrt().item() == pytest.approx(1.5 * sigmas[0], rel=1e-5)
    assert w1.square().mean().sqrt().item() == pytest.approx(sigmas[1], rel=1e-5)
    with torch.no_grad():
        expected = norm(x)
        norm.W0.mul_(3.0)
    torch.testing.assert_close(norm(x), expected)


def test_btt_norm_zero_initialised_factor_gets_finite_gradients():
    """Zero-init layers (readout, residual out-projections) zero the last factor; the cap must not make NaNs."""
    layer = build(S("btt_norm", rank=2), 64, 64)
    layer.reset_parameters({"W0": spectral_std(8, 16), "W1": 0.0})
    layer(torch.randn(4, 64)).sum().backward()
    assert torch.isfinite(layer.W1.grad).all() and layer.W1.grad.abs().sum() > 0
    assert torch.isfinite(layer.W0.grad).all() and torch.isfinite(layer.gamma1.grad)


def test_btt_norm_gammas_are_scalars_reset_to_one():
    layer = build(S("btt_norm"), 64, 64)
    assert {n: p.shape for n, p in layer.named_parameters() if n.startswith("gamma")} == {
        "gamma0": torch.Size([]),
        "gamma1": torch.Size([]),
    }
    with torch.no_grad():
        layer.gamma0.fill_(3.0)
    layer.reset_parameters()
    assert layer.gamma0.item() == 1.0 and layer.gamma1.item() == 1.0
    assert [s.name for s in layer.factor_specs()] == ["W0", "W1"]  # gammas are not matrix factors


def test_reset_parameters_with_zero_std_zeroes_only_that_factor():
    layer = build(S("btt", rank=2), 64, 64)
    layer.reset_parameters({"W0": 0.1, "W1": 0.0})
    assert torch.count_nonzero(layer.W1) == 0
    assert layer.W0.std().item() == pytest.approx(0.1, rel=0.1)


# --- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg,d_in,d_out,pattern",
    [
        (S("kron"), 127, 64, r"structure.name='kron'.*d_in=127.*126 or 128"),
        (S("tt", rank=2), 64, 97, r"structure.name='tt'.*d_out=97.*96 or 98"),
        (S("btt"), 131, 131, r"structure.name='btt'.*layout=paper.*d_in=131.*128 or 132, or a different"),
        (S("btt", layout="balanced"), 131, 131, r"structure.name='btt'.*layout=balanced.*d_in=131.*130 or 132"),
        (S("btt"), 80, 64, r"d_in=80.*\(4, 20\).*77 or 81, or structure.layout=balanced"),
        (S("kron", layout="square"), 64, 64, r"structure.layout='square' is not a layout.*paper.*balanced"),
        (S("btt_norm"), 64, 2 * 17, r"'btt_norm'.*d_out=34.*\(2, 17\).*33 or 35"),
        (S("kron", cores=1), 64, 64, r"structure.cores >= 2"),
        (S("btt", cores=3), 64, 64, r"structure.cores=3.*structure.cores=2"),
        (S("btt", rank=9), 64, 64, r"structure.rank=9.*min\(m0, n1\)=8"),
        (S("btt", rank=0), 64, 64, r"structure.rank=0"),
        (S("tt", rank=65), 64, 64, r"structure.rank=65.*largest useful TT-rank 64"),
        (S("tt", rank=0), 64, 64, r"structure.rank >= 1"),
        (S("low_rank", rank=4, rank_frac=0.1), 64, 64, r"both structure.rank=4 and structure.rank_frac=0.1"),
        (S("low_rank", rank=48), 64, 48, r"structure.rank=48.*min\(d_in, d_out\)=48"),
        (S("low_rank", rank_frac=0.99), 64, 48, r"structure.rank_frac=0.99 \(rank 48\)"),
        (S("low_rank", rank_frac=1.5), 64, 48, r"0 < structure.rank_frac < 1, got 1.5"),
        (S("low_rank"), 1, 48, r"default rank"),
        (S("monarch", blocks=100), 64, 64, r"structure.blocks=100.*min\(d_in, d_out\)=64"),
        (S("monarch", blocks=0), 64, 64, r"structure.blocks=0"),
    ],
)
def test_bad_widths_and_settings_name_the_field(cfg, d_in, d_out, pattern):
    with pytest.raises(StructureError, match=pattern):
        REGISTRY[cfg.name].validate(cfg, d_in, d_out)
    with pytest.raises(StructureError, match=pattern):
        build_linear(cfg, d_in, d_out)


def test_validation_is_cheap_and_allocates_nothing():
    """A launcher validates hundreds of configs: resolving huge layers must not build them."""
    start = time.perf_counter()
    for name in MINE:
        cfg = S(name, rank=4 if name in ("tt", "btt", "btt_norm") else None)
        for width in (4096, 8192, 65536):
            REGISTRY[name].validate(cfg, width, 4 * width)
    assert time.perf_counter() - start < 1.0
    with torch.device("meta"):  # the planner builds models on the meta device
        layer = build_linear(S("btt", rank=4), 4096, 4096)
    assert layer.W0.is_meta and layer.flops_per_token() == 2 * 2 * 4 * 4096**1.5


# --- factorisation helpers ----------------------------------------------------------------------------------


def test_near_equal_factors():
    assert near_equal_factors(768, 2) == (24, 32)
    assert near_equal_factors(768, 3) == (8, 8, 12)
    assert near_equal_factors(1024, 2) == (32, 32)
    assert near_equal_factors(13, 2) == (1, 13)
    assert near_equal_factors(1, 3) == (1, 1, 1)
    for n in range(1, 400):
        for count in (1, 2, 3):
            f = near_equal_factors(n, count)
            assert math.prod(f) == n and list(f) == sorted(f) and len(f) == count


def test_divisors_and_nearest_valid():
    assert divisors(36) == [1, 2, 3, 4, 6, 9, 12, 18, 36]
    assert divisors(1) == [1]
    assert nearest_valid(10, lambda w: w % 7 == 0) == [7, 14]
    assert clean_factors(96, 2, "balanced", "btt", "d_in") == (8, 12)
    assert clean_factors(768, 2, "paper", "btt", "d_in") == (16, 48)


def test_greedy_factors_are_the_reference_split():
    """fidelity.md: each prime (smallest first) multiplies the currently smallest factor; ascending."""
    assert greedy_factors(512, 2) == (16, 32)
    assert greedy_factors(768, 2) == (16, 48)
    assert greedy_factors(1000, 2) == (20, 50)
    assert greedy_factors(384, 2) == (16, 24)
    assert greedy_factors(3072, 2) == (32, 96)
    assert greedy_factors(384, 3) == (4, 8, 12) and greedy_factors(1536, 3) == (8, 8, 24)
    assert greedy_factors(13, 2) == (1, 13) and greedy_factors(1, 2) == (1, 1)
    for n in range(1, 400):
        for count in (1, 2, 3):
            f = greedy_factors(n, count)
            assert math.prod(f) == n and list(f) == sorted(f) and len(f) == count


def test_pad_last_zero_pads_and_keeps_exact_sizes():
    x = torch.randn(2, 5)
    assert pad_last(x, 5) is x
    padded = pad_last(x, 8)
    assert padded.shape == (2, 8) and torch.equal(padded[:, :5], x) and not padded[:, 5:].any()

