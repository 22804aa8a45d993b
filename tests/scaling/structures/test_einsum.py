"""The Einsum structure: axis sizes, costs, taxonomy, theta validation, and its special points."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from scaling.config.schema import StructureConfig
from scaling.structures import StructureError, build_linear, spectral_std
from scaling.structures.einsum import Einsum, Theta

BTT1 = [0.5, 0, 0.5, 0, 0.5, 0.5, 0]  # Monarch / BTT rank 1
BTT_R = [0.5, 0, 0.5, 0, 0.5, 0.5, 0.25]  # BTT rank d^(1/4)
KRON = [0.5, 0.5, 0, 0.5, 0.5, 0, 0]
THIRDS = [1 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 0]  # TT-like, every axis d^(1/3)
B_FIRST = [0.4, 0.35, 0.25, 0.6, 0.4, 0, 0]  # contracting with B first is cheaper at d = 1024


def einsum_layer(theta: list[float], d_in: int, d_out: int, bias: bool = False) -> Einsum:
    torch.manual_seed(0)
    layer = build_linear(StructureConfig(name="einsum", theta=theta), d_in, d_out, bias)
    assert isinstance(layer, Einsum)
    return layer


def dense_matrix(layer: Einsum) -> torch.Tensor:
    """The (out_size, in_size) matrix of the padded layer: W[(f,e,d), (g,b,a)] = sum_r A[f,d,r,g,a] B[f,e,r,g,b]."""
    s = layer.sizes
    w = torch.einsum("fdrga,fergb->fedgba", layer.A, layer.B)
    return w.reshape(s.out_size, s.in_size)


def measured_flops_per_token(layer: torch.nn.Module, d_in: int, tokens: int = 6) -> float:
    x = torch.randn(2, tokens // 2, d_in)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        layer(x)
    return counter.get_total_flops() / tokens


# --- shapes, function, costs --------------------------------------------------------------------------------

CASES = [
    (BTT1, 64, 64),
    (BTT1, 48, 192),  # rounded axes, padded input, truncated output
    (BTT_R, 64, 256),
    (KRON, 36, 144),
    (THIRDS, 768, 768),  # 768^(1/3) = 9.2 and 9 * 9 * 9 < 768, so one axis rounds up: 810 (5% padding)
    (THIRDS, 100, 100),  # 100^(1/3) = 4.6: 4 * 5 * 5 = 100, no padding
    (B_FIRST, 1024, 1024),
    ([1, 0, 0, 0, 1, 0, 0.5], 100, 50),  # low-rank, rank round(50^0.5) = 7
    ([0.25, 0.25, 0.5, 0.25, 0.25, 0.5, 0.25], 256, 256),  # every axis in use
]


@pytest.mark.parametrize("theta,d_in,d_out", CASES)
def test_forward_is_the_padded_dense_product(theta, d_in, d_out):
    layer = einsum_layer(theta, d_in, d_out, bias=True)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 5, d_in)
    y = layer(x)
    assert y.shape == (3, 5, d_out)
    s = layer.sizes
    x_pad = torch.nn.functional.pad(x, (0, s.in_size - d_in))
    expected = (x_pad @ dense_matrix(layer).T)[..., :d_out] + layer.bias
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("theta,d_in,d_out", CASES)
def test_params_and_flops_match_the_formulas_and_the_counter(theta, d_in, d_out):
    layer = einsum_layer(theta, d_in, d_out)
    s = layer.sizes
    # params = d_phi d_delta d_rho d_gamma d_alpha + d_phi d_epsilon d_rho d_gamma d_beta
    assert layer.num_params() == s.phi * s.rho * s.gamma * (s.delta * s.alpha + s.epsilon * s.beta)
    # MACs/token of (x A) B = d_in d_phi d_delta d_rho + d_out d_rho d_gamma d_beta; (x B) A swaps the roles.
    a_first = s.in_size * s.phi * s.delta * s.rho + s.out_size * s.rho * s.gamma * s.beta
    b_first = s.in_size * s.phi * s.epsilon * s.rho + s.out_size * s.rho * s.gamma * s.alpha
    assert layer.flops_per_token() == 2 * min(a_first, b_first)
    assert layer.a_first == (a_first <= b_first)
    assert measured_flops_per_token(layer, d_in) == pytest.approx(layer.flops_per_token(), rel=0.01)


def test_axis_sizes_round_powers_to_the_least_padding():
    s = einsum_layer(THIRDS, 768, 768).sizes
    assert (s.alpha, s.beta, s.gamma, s.delta, s.epsilon, s.phi, s.rho) == (9, 9, 10, 9, 9, 10, 1)
    s = einsum_layer(THIRDS, 100, 100).sizes
    assert (s.alpha, s.beta, s.gamma) == (4, 5, 5)  # round() would give 5 * 5 * 5 = 125, 25% padding
    s = einsum_layer(BTT1, 48, 192).sizes
    assert (s.alpha, s.gamma, s.phi, s.epsilon) == (7, 7, 14, 14)  # 6 * 7 = 42 < 48; 13 * 14 = 182 < 192
    rect = einsum_layer(BTT_R, 64, 256).sizes
    assert (rect.alpha, rect.gamma, rect.phi, rect.epsilon, rect.rho) == (8, 8, 16, 16, 3)  # 64^0.25 = 2.8 -> 3


def test_contraction_order_is_the_cheaper_one():
    layer = einsum_layer(B_FIRST, 1024, 1024)
    s = layer.sizes
    reference_order = 2 * (1024 * s.phi * s.delta * s.rho + 1024 * s.rho * s.gamma * s.beta)
    assert not layer.a_first
    assert layer.flops_per_token() < reference_order
    assert einsum_layer(BTT1, 64, 64).a_first  # BTT: A first is d^0.5 times cheaper


def test_factor_specs_follow_the_bmm0_fan_ins_and_init_is_spectral():
    layer = einsum_layer(BTT_R, 256, 1024)
    s = layer.sizes
    a, b = layer.factor_specs()
    assert (a.name, a.fan_in, a.fan_out) == ("A", s.alpha, s.delta * s.phi * s.rho)
    assert (b.name, b.fan_in, b.fan_out) == ("B", s.beta * s.gamma * s.rho, s.epsilon)
    assert a.shape == tuple(layer.A.shape) and b.shape == tuple(layer.B.shape)
    assert layer.A.std().item() == pytest.approx(spectral_std(a.fan_in, a.fan_out), rel=0.05)
    assert layer.B.std().item() == pytest.approx(spectral_std(b.fan_in, b.fan_out), rel=0.05)


# --- taxonomy -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "theta,expected",
    [
        ([1, 0, 0, 0, 1, 0, 0.3], (0, 0.3, 0.3)),  # low-rank: (0, rho, rho)
        (BTT1, (0, 1, 0.5)),  # Monarch / BTT-1
        (BTT_R, (0, 1, 0.75)),  # BTT rank d^(1/4)
        (KRON, (0.5, 1, 0.5)),  # Kronecker
        ([1, 0, 0, 0, 0, 1, 0], (0, 1, 1)),  # dense
    ],
)
def test_taxonomy_of_the_reference_rows(theta, expected):
    layer = einsum_layer(theta, 64, 64)
    assert (layer.omega, layer.psi, layer.nu) == pytest.approx(expected)


def test_taxonomy_exponents_describe_how_flops_scale():
    # Square case: FLOPs ~ d^(1 + nu). Between d = 4096 and 256 (16x) the ratio is 16^(1 + nu).
    for theta in (BTT1, BTT_R, KRON):
        small, large = einsum_layer(theta, 256, 256), einsum_layer(theta, 4096, 4096)
        growth = math.log(large.flops_per_token() / small.flops_per_token(), 16)
        assert growth == pytest.approx(1 + large.nu, abs=0.02)


# --- validation ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "theta,pattern",
    [
        (None, r"structure\.theta is required.*\[0\.5,0,0\.5,0,0\.5,0\.5,0\]"),
        ([0.5, 0.5, 0, 0.5, 0.5, 0], r"has 6 entries.*alpha, beta, gamma, delta, epsilon, phi, rho"),
        ([1.5, -0.5, 0, 0, 1, 0, 0], r"every exponent must lie in \[0, 1\]"),
        ([0.5, 0.5, 0.5, 0, 1, 0, 0], r"alpha\+beta\+gamma=1\.5.*must both be 1"),
        (["a"] * 7, r"must be a list of 7 numbers"),
    ],
)
def test_invalid_theta_names_the_field(theta, pattern):
    with pytest.raises(StructureError, match=pattern):
        build_linear(StructureConfig(name="einsum", theta=theta), 64, 64)


def test_redundant_theta_names_the_rule_and_the_swapped_equivalent():
    theta = [0.25, 0.5, 0.25, 0.5, 0.25, 0.25, 0]
    with pytest.raises(StructureError, match=r"redundant \(min\(alpha, epsilon\) < min\(beta, delta\)\)") as err:
        Theta.parse(theta)
    assert "theta=[0.5,0.25,0.25,0.25,0.5,0.25,0] with A and B swapped" in str(err.value)
    Theta.parse([0.5, 0.25, 0.25, 0.25, 0.5, 0.25, 0])  # the suggestion is valid


def test_degenerate_theta_names_the_rule_and_clips_the_rank():
    pattern = r"degenerate \(rho > min\(alpha, epsilon\)\).*use theta=\[0\.5,0,0\.5,0,0\.5,0\.5,0\.5\]"
    with pytest.raises(StructureError, match=pattern):
        Theta.parse([0.5, 0, 0.5, 0, 0.5, 0.5, 0.75])


def test_width_that_needs_too_much_padding_names_the_nearest_valid_width():
    # 9^(1/3) = 2.08: 2 * 2 * 2 < 9, so the best cover is 2 * 2 * 3 = 12, 33% padding.
    pattern = r"cannot factor d_in=9.*\(2, 2, 3\).*more than 15%.*nearest that works is d_in=8"
    with pytest.raises(StructureError, match=pattern):
        build_linear(StructureConfig(name="einsum", theta=THIRDS), 9, 64)
    assert einsum_layer(THIRDS, 8, 64).sizes.in_size == 8


# --- special points: einsum computes the named structure's function ----------------------------------------

def named(name: str, d_in: int, d_out: int, **fields) -> torch.nn.Module:
    return build_linear(StructureConfig(name=name, **fields), d_in, d_out)


def assert_same_function(a: torch.nn.Module, b: torch.nn.Module, d_in: int) -> None:
    x = torch.randn(4, 3, d_in)
    torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)
    assert a.num_params() == b.num_params()
    assert a.flops_per_token() == b.flops_per_token()


def test_low_rank_point_is_low_rank():
    d_in, d_out = 64, 48
    layer = einsum_layer([1, 0, 0, 0, 1, 0, 0.5], d_in, d_out)
    r = layer.sizes.rho  # round(48^0.5) = 7
    other = named("low_rank", d_in, d_out, rank=r)
    with torch.no_grad():
        other.U.copy_(layer.A.reshape(r, d_in))  # A[r, alpha]: d_in -> r
        other.V.copy_(layer.B.reshape(d_out, r))  # B[epsilon, r]: r -> d_out
    assert_same_function(layer, other, d_in)


@pytest.mark.parametrize("d_in,d_out", [(64, 64), (16, 64)])
def test_kronecker_point_is_kron(d_in, d_out):
    layer = einsum_layer(KRON, d_in, d_out)
    s = layer.sizes
    other = named("kron", d_in, d_out, cores=2)
    # y[epsilon, delta] = sum x[beta, alpha] B[epsilon, beta] A[delta, alpha]: W = kron(B, A), outer factor first.
    assert other.layout.in_factors == (s.beta, s.alpha) and other.layout.out_factors == (s.epsilon, s.delta)
    with torch.no_grad():
        other.factor0.copy_(layer.B.reshape(s.epsilon, s.beta))
        other.factor1.copy_(layer.A.reshape(s.delta, s.alpha))
    assert_same_function(layer, other, d_in)


def btt_cores_of(layer: Einsum) -> tuple[torch.Tensor, torch.Tensor]:
    """BTT cores (m1, m0, n0 r) and (n0, m1 r, n1) of an einsum layer with beta = delta = 0."""
    s = layer.sizes
    w0 = layer.A[:, 0].permute(2, 3, 0, 1).reshape(s.gamma, s.alpha, s.phi * s.rho)  # A[f, r, g, a] -> [g, a, (f r)]
    w1 = layer.B[..., 0].permute(0, 3, 2, 1).reshape(s.phi, s.gamma * s.rho, s.epsilon)  # B[f,e,r,g] -> [f,(g r),e]
    return w0, w1


@pytest.mark.parametrize("theta,d_in,d_out", [(BTT1, 16, 64), (BTT_R, 64, 256), (BTT_R, 256, 256)])
def test_btt_points_are_btt(theta, d_in, d_out):
    layer = einsum_layer(theta, d_in, d_out)
    other = named("btt", d_in, d_out, rank=layer.sizes.rho)
    w0, w1 = btt_cores_of(layer)
    assert w0.shape == other.W0.shape and w1.shape == other.W1.shape
    with torch.no_grad():
        other.W0.copy_(w0)
        other.W1.copy_(w1)
    assert_same_function(layer, other, d_in)


def test_btt1_point_is_monarch_without_its_output_shuffle():
    """The BTT-1 point is L P^T R; Monarch (P L P^T R) interleaves the same blocks' outputs: y[s b + l] = o[l, s]."""
    layer = einsum_layer(BTT1, 64, 64)
    other = named("monarch", 64, 64, blocks=8)
    w0, w1 = btt_cores_of(layer)
    with torch.no_grad():
        other.R.copy_(w0)  # block i1 maps x[i1, :] -> h[i1, j0]
        other.L.copy_(w1)  # P^T hands block j0 the j0-th output of every R block
    x = torch.randn(5, 64)
    unshuffled = other(x).view(5, 8, 8).transpose(1, 2).reshape(5, 64)  # feature s b + l -> l out_blk + s
    torch.testing.assert_close(layer(x), unshuffled, rtol=1e-4, atol=1e-5)
    assert layer.num_params() == other.num_params() and layer.flops_per_token() == other.flops_per_token()


def test_special_point_factor_specs_match_the_named_structure():
    """Same fan-ins, so structure-aware muP gives the einsum point the named structure's init and LR."""
    pairs = [
        (einsum_layer([1, 0, 0, 0, 1, 0, 0.5], 64, 64), named("low_rank", 64, 64, rank=8)),
        (einsum_layer(BTT_R, 256, 256), named("btt", 256, 256, rank=4)),
        (einsum_layer(BTT1, 64, 64), named("monarch", 64, 64, blocks=8)),
    ]
    for layer, other in pairs:
        fans = [(f.fan_in, f.fan_out) for f in layer.factor_specs()]
        assert fans == [(f.fan_in, f.fan_out) for f in other.factor_specs()]
