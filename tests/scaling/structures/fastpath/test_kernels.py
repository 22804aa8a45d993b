"""The fused two-core kernel (scaling/structures/fastpath/kernels.py) against plain einsum references.

Every structure that runs on it (BTT, Monarch, 2-core TT / Kronecker, Einsum) is checked for outputs and for the
gradients of the input and of every factor, over square, rectangular, padded and rank > 1 shapes, with chunks that
do not divide the batch; the reference is each structure's defining formula written as one torch.einsum on the
layer's own parameters, never the kernel's plan. Plus gradcheck in float64, the fallback path, FLOP counting, the
copies the fast path makes, and input errors. Float32 runs take both CPU fast paths (the `path` fixture): the
compiled offset GEMM where it applies (native.py, token_major.py) and the bmm schedule.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import profile
from torch.utils.flop_counter import FlopCounterMode

from scaling.config.schema import StructureConfig
from scaling.structures import StructuredLinear, build_linear
from scaling.structures.fastpath import bmm_schedule
from scaling.structures.fastpath import kernels as K
from scaling.structures.fastpath.bmm_schedule import batch_dense
from scaling.structures.btt import BlockTensorTrain, btt_plan
from scaling.structures.einsum import Einsum
from scaling.structures.kron import Kronecker
from scaling.structures.monarch import Monarch
from scaling.structures.fastpath.paths import (
    PathPolicy, current_policy, native_runs, native_tables, use_policy, uses_fast_path,
)
from scaling.structures.tt import TensorTrain
from scaling.structures.fastpath.two_core import TwoCorePlan
from two_core_plans import plan_and_cores

S = StructureConfig


pytestmark = pytest.mark.usefixtures("one_thread", "fused_always")


FUSED_ALWAYS = PathPolicy(fused_min_elements=0)
NATIVE_ALWAYS = PathPolicy(fused_min_elements=0, native_min_elements=0, native_column_multiple=1)


@pytest.fixture
def fused_always():
    """The fused Functions for every call: these tests are small, below PathPolicy.fused_min_elements."""
    with use_policy(FUSED_ALWAYS):
        yield


@pytest.fixture(params=["native", "bmm"])
def path(request):
    """Which float32 CPU path runs: the compiled GEMM (skipped where it is not built) or the bmm schedule."""
    if request.param == "native" and not native_runs():
        pytest.skip("the compiled offset GEMM is not available on this machine")
    # these cases are small and their blocks odd-sized
    with use_policy(dataclasses.replace(NATIVE_ALWAYS, native=request.param == "native")):
        yield request.param


@pytest.fixture
def bmm_path():
    with use_policy(dataclasses.replace(FUSED_ALWAYS, native=False, amx=False)):
        yield


@pytest.fixture
def native_path():
    """The compiled path for every call, however small or odd-sized (skipped where it is not built)."""
    if not native_runs():
        pytest.skip("the compiled offset GEMM is not available on this machine")
    with use_policy(NATIVE_ALWAYS):
        yield


# --- references: each structure's formula as one einsum on its parameters --------------------------------------
def btt_reference(layer: BlockTensorTrain, x: torch.Tensor) -> torch.Tensor:
    """y[j0, j1] = sum_{i1, i0, rho} x[i1, i0] W0[i1, i0, j0 r + rho] W1[j0, i1 r + rho, j1]."""
    lay = layer.layout
    w0 = layer.W0.view(lay.m1, lay.m0, lay.n0, lay.rank)
    w1 = layer.W1.view(lay.n0, lay.m1, lay.rank, lay.n1)
    y = torch.einsum("nab,abjr,jark->njk", x.view(-1, lay.m1, lay.m0), w0, w1)
    return y.reshape(-1, layer.d_out)


def monarch_reference(layer: Monarch, x: torch.Tensor) -> torch.Tensor:
    """P L P^T R: h[k, q] = sum_a x[k, a] R[k, a, q]; h flattened (k q), read as (r l) -> g[l, r]; o[l, s] =
    sum_r g L; y[s b + l] = o[l, s] (HazyResearch's blockdiag_butterfly_multiply, written with reshapes)."""
    b, in_blk, mid = layer.layout.blocks, layer.layout.in_blk, layer.layout.mid
    x = F.pad(x, (0, b * in_blk - layer.d_in)).view(-1, b, in_blk)
    h = torch.einsum("nka,kaq->nkq", x, layer.R).reshape(-1, mid, b)  # flat k mid + q = r b + l
    o = torch.einsum("nrl,lrs->nls", h, layer.L)
    return o.transpose(1, 2).reshape(-1, b * layer.layout.out_blk)[:, : layer.d_out]


def tt_reference(layer: TensorTrain | Kronecker, x: torch.Tensor) -> torch.Tensor:
    """y[j1, j2] = sum_{a, b, s} x[a, b] G0[j1, s, 0, a] G1[j2, 0, s, b] (Kronecker: s has size 1)."""
    n1, n2 = layer.layout.in_factors
    if isinstance(layer, Kronecker):
        g0, g1 = (f.unsqueeze(1) for f in layer.factors())  # A_k (m, n) -> (m, 1, n)
    else:
        g0, g1 = layer.core0[:, :, 0], layer.core1[:, 0]
    return torch.einsum("nab,jsa,ksb->njk", x.view(-1, n1, n2), g0, g1).reshape(-1, layer.d_out)


def einsum_reference(layer: Einsum, x: torch.Tensor) -> torch.Tensor:
    """y[f, e, d] = sum_{g, b, a, r} x[g, b, a] A[f, d, r, g, a] B[f, e, r, g, b], on the padded axes."""
    s = layer.sizes
    x = F.pad(x, (0, s.in_size - layer.d_in)).view(-1, s.gamma, s.beta, s.alpha)
    y = torch.einsum("ngba,fdrga,fergb->nfed", x, layer.A, layer.B)
    return y.reshape(-1, s.out_size)[:, : layer.d_out]


@dataclass(frozen=True)
class Case:
    cfg: StructureConfig
    d_in: int
    d_out: int

    def __str__(self) -> str:
        extra = {k: v for k, v in vars(self.cfg).items() if k in ("rank", "blocks", "theta") and v is not None}
        if self.cfg.layout != "paper":
            extra["layout"] = self.cfg.layout
        return f"{self.cfg.name}-{self.d_in}x{self.d_out}-{extra}"


REFERENCES: dict[type, Callable] = {
    BlockTensorTrain: btt_reference, Monarch: monarch_reference, TensorTrain: tt_reference,
    Kronecker: tt_reference, Einsum: einsum_reference,
}
BTT1 = [0.5, 0, 0.5, 0, 0.5, 0.5, 0]
CASES = [
    Case(S("btt"), 64, 64),
    Case(S("btt", rank=4), 64, 128),  # rectangular, rank > 1 (intermediate re-ordered by a copy in backward)
    Case(S("btt", rank=2), 96, 48),
    Case(S("monarch", blocks=8), 64, 64),  # b = mid: rank-1 BTT
    Case(S("monarch", blocks=4), 64, 128),  # b != mid
    Case(S("monarch"), 96, 48),  # b = 10 divides neither width: padded input, truncated output
    Case(S("kron"), 64, 128),
    Case(S("tt", rank=4), 64, 64),
    Case(S("tt", rank=3), 96, 48),
    Case(S("einsum", theta=BTT1), 48, 192),  # rounded axes, padding
    Case(S("einsum", theta=[0.5, 0, 0.5, 0, 0.5, 0.5, 0.25]), 64, 256),
    Case(S("einsum", theta=[0.5, 0.5, 0, 0.5, 0.5, 0, 0]), 36, 144),  # Kronecker point
    Case(S("einsum", theta=[1 / 3] * 6 + [0]), 100, 100),  # every axis in use
    Case(S("einsum", theta=[0.4, 0.35, 0.25, 0.6, 0.4, 0, 0]), 256, 256),  # (x B) A is the cheaper order
    Case(S("einsum", theta=[0.25, 0.25, 0.5, 0.25, 0.25, 0.5, 0.25]), 256, 256),
    Case(S("einsum", theta=[1, 0, 0, 0, 1, 0, 0.5]), 100, 50),  # low-rank point
    # the reference code's (paper) layout at the widths of fidelity.md, and the balanced layout at the same widths
    Case(S("btt"), 512, 512),  # blocks 32 x 16 -> 16 x 32
    Case(S("btt", rank=4), 512, 512),
    Case(S("btt"), 384, 1536),  # 24 x 16 -> 32 x 48
    Case(S("btt"), 1000, 1000),  # 50 x 20 -> 20 x 50
    Case(S("btt"), 768, 3072),  # 48 x 16 -> 32 x 96
    Case(S("btt", layout="balanced"), 768, 3072),  # 24 x 32 -> 48 x 64
    Case(S("btt", rank=2, layout="balanced"), 512, 512),  # 16 x 32 -> 16 x 32
    Case(S("monarch", blocks=4), 256, 256),  # the reference's default of 4 blocks: b != mid
    Case(S("monarch", blocks=8), 128, 512),
    Case(S("kron"), 1000, 1000),  # (20, 50) -> (20, 50)
    Case(S("kron"), 768, 3072),  # (16, 48) -> (32, 96)
    Case(S("kron", layout="balanced"), 768, 3072),
    Case(S("tt", rank=4), 768, 3072),
]


def build(case: Case, dtype: torch.dtype = torch.float32) -> StructuredLinear:
    torch.manual_seed(0)
    layer = build_linear(case.cfg, case.d_in, case.d_out).to(dtype)
    with torch.no_grad():  # O(1) entries everywhere (zero-init factors would hide gradient errors)
        for p in layer.parameters():
            p.normal_()
    return layer


def reference(layer: StructuredLinear, x: torch.Tensor) -> torch.Tensor:
    return REFERENCES[type(layer)](layer, x)


def outputs_and_grads(layer: StructuredLinear, forward: Callable, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The output and d(sum(y * w))/d(x, every parameter) for a fixed weighting w."""
    layer.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    y = forward(x)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    (y * weights).sum().backward()
    return {"y": y.detach(), "x": x.grad} | {name: p.grad for name, p in layer.named_parameters()}


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], **tol) -> None:
    assert got.keys() == want.keys()
    for name, expected in want.items():
        assert got[name] is not None, name
        torch.testing.assert_close(got[name], expected, msg=name, **tol)


# --- fast path against the references ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("chunk", [None, 7])  # default chunking, and chunks that leave a ragged last one
def test_fast_path_matches_reference_in_float64(case, chunk):
    layer = build(case, torch.float64)
    assert uses_fast_path(torch.zeros(1))
    x = torch.randn(30, case.d_in, dtype=torch.float64)
    fast = outputs_and_grads(layer, lambda v: forward_with_chunk(layer, v, chunk), x)
    want = outputs_and_grads(layer, lambda v: reference(layer, v), x)
    assert_same(fast, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_float32_fast_path_matches_float64_reference(case, path):
    layer = build(case)
    x = torch.randn(2, 9, case.d_in)  # leading dims are flattened and restored
    fast = outputs_and_grads(layer, layer, x)
    assert fast["y"].shape == (2, 9, case.d_out)
    layer64 = copy.deepcopy(layer).double()
    want = outputs_and_grads(layer64, lambda v: reference(layer64, v.reshape(-1, case.d_in)).view(2, 9, -1), x.double())
    assert_same(fast, {k: v.float() for k, v in want.items()}, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_fallback_path_matches_fast_path(case):
    """reference_apply (non-CPU devices, PathPolicy(fused=False)) computes the same map through plain autograd ops."""
    layer = build(case, torch.float64)
    x = torch.randn(11, case.d_in, dtype=torch.float64)
    fast = outputs_and_grads(layer, lambda v: forward_with_chunk(layer, v, chunk=4), x)
    slow = outputs_and_grads(layer, lambda v: forward_with_chunk(layer, v, chunk=None, fast=False), x)
    assert_same(fast, slow, rtol=1e-10, atol=1e-10)


def tt_cores(layer: TensorTrain | Kronecker) -> list[torch.Tensor]:
    """The 4-D TT cores (m, r_out, r_in, n) a TT or Kronecker layer passes to tt2_apply."""
    if isinstance(layer, Kronecker):
        return [f.view(f.shape[0], 1, 1, f.shape[1]) for f in layer.factors()]
    return layer.cores()


def forward_with_chunk(layer: StructuredLinear, x: torch.Tensor, chunk: int | None, fast: bool = True) -> torch.Tensor:
    """The layer's kernel call (bias-free) with an explicit chunk size; fast=False: plain ops."""
    policy = dataclasses.replace(current_policy(), fused=fast)
    if isinstance(layer, (TensorTrain, Kronecker)):
        return K.tt2_apply(x, *tt_cores(layer), chunk=chunk, policy=policy)
    plan, w0, w1 = plan_and_cores(layer)
    return K.two_core_apply(x, w0, w1, plan, chunk=chunk, policy=policy)


@pytest.mark.parametrize(
    "case",
    [Case(S("btt", rank=2), 16, 36), Case(S("monarch", blocks=3), 10, 14), Case(S("tt", rank=2), 16, 36),
     Case(S("einsum", theta=[1 / 3] * 6 + [0]), 27, 27)],
    ids=str,
)
def test_gradcheck_float64(case):
    layer = build(case, torch.float64)
    x = torch.randn(5, case.d_in, dtype=torch.float64, requires_grad=True)
    if isinstance(layer, TensorTrain):
        cores = [c.detach().clone().requires_grad_(True) for c in tt_cores(layer)]
        assert torch.autograd.gradcheck(lambda a, b, c: K.tt2_apply(a, b, c, chunk=2), (x, *cores))
        return
    plan, w0, w1 = plan_and_cores(layer)
    w0, w1 = w0.detach().clone().requires_grad_(True), w1.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, c: K.two_core_apply(a, b, c, plan, chunk=2), (x, w0, w1))


def test_only_the_needed_gradients_are_computed():
    layer = build(Case(S("btt", rank=2), 64, 64))
    x = torch.randn(20, 64, requires_grad=True)
    layer.W0.requires_grad_(False)
    layer(x).sum().backward()
    assert layer.W0.grad is None and layer.W1.grad is not None and x.grad is not None
    x_frozen = torch.randn(20, 64)  # no input gradient wanted (the first layer of a network)
    layer.W1.grad = None
    layer(x_frozen).sum().backward()
    assert layer.W1.grad is not None


def test_small_calls_take_the_plain_path():
    """Below fused_min_elements (tokens x the wider end) the layer runs plain autograd ops, from it the Function."""
    policy = PathPolicy(fused_min_elements=64 * 100)
    layer = build(Case(S("btt"), 64, 64))
    plan, w0, w1 = plan_and_cores(layer)
    small, large = torch.randn(99, 64, requires_grad=True), torch.randn(100, 64, requires_grad=True)
    assert "_TwoCoreFunctionBackward" not in graph_nodes(K.two_core_apply(small, w0, w1, plan, policy=policy))
    assert "_TwoCoreFunctionBackward" in graph_nodes(K.two_core_apply(large, w0, w1, plan, policy=policy))
    torch.testing.assert_close(
        K.two_core_apply(small, w0, w1, plan, policy=policy), K.reference_apply(small, w0, w1, plan)
    )


def graph_nodes(y: torch.Tensor) -> set[str]:
    """Names of the autograd nodes behind y."""
    seen, todo = {}, [y.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and id(node) not in seen:
            seen[id(node)] = type(node).__name__
            todo += [next_node for next_node, _ in node.next_functions]
    return set(seen.values())


def test_double_backward_needs_the_fallback():
    case = Case(S("btt"), 16, 16)
    layer = build(case, torch.float64)
    plan, w0, w1 = plan_and_cores(layer)
    x = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(K.two_core_apply(x, w0, w1, plan).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad|double backward"):
        g.sum().backward()
    plain = PathPolicy(fused=False)
    assert torch.autograd.gradgradcheck(lambda a: K.two_core_apply(a, w0, w1, plan, policy=plain), (x,))


def test_empty_and_non_contiguous_inputs():
    layer = build(Case(S("btt", rank=2), 64, 128))
    assert layer(torch.zeros(0, 64)).shape == (0, 128)
    x = torch.randn(64, 10).T  # a transposed view
    torch.testing.assert_close(layer(x), layer(x.contiguous()))
    torch.testing.assert_close(layer(x), btt_reference(layer, x.contiguous()), rtol=1e-4, atol=1e-4)


# --- routed experts (BTT-MoE) -------------------------------------------------------------------------------------
def routed_reference(x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, experts: torch.Tensor,
                     gates: torch.Tensor, m1: int, m0: int) -> torch.Tensor:
    """Every rank-1 BTT expert on every token, mixed by the dense (N, E) gate matrix (zero where not routed).

    w0 (E, m1, m0, n0), w1 (E, n0, m1, n1) as BTTMoE stores them.
    """
    dense_gates = torch.zeros(x.shape[0], w0.shape[0], dtype=x.dtype).scatter(1, experts, gates)
    z = torch.einsum("nab,eabj->neaj", x.view(-1, m1, m0), w0)  # (N, E, m1, n0)
    every = torch.einsum("neaj,ejak->nejk", z, w1)  # (N, E, n0, n1)
    return torch.einsum("ne,nejk->njk", dense_gates, every).reshape(x.shape[0], -1)


def routing_case(tokens: int, n_experts: int, top_k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct random experts per token, never expert 1 (an expert without tokens), and random positive gates."""
    gen = torch.Generator().manual_seed(seed)
    choices = [e for e in range(n_experts) if e != 1]
    experts = torch.stack([torch.tensor(choices)[torch.randperm(len(choices), generator=gen)[:top_k]]
                           for _ in range(tokens)])
    gates = torch.rand(tokens, top_k, generator=gen, dtype=torch.float64) + 0.1
    return experts, gates


@pytest.mark.parametrize(
    "d_in,d_out,n_experts,top_k,layout",
    [(64, 64, 4, 2, "paper"), (36, 144, 8, 3, "paper"), (512, 512, 8, 2, "paper"), (384, 1536, 4, 2, "paper"),
     (768, 768, 4, 2, "balanced")],
)
def test_routed_experts_match_the_all_experts_reference(d_in, d_out, n_experts, top_k, layout):
    torch.manual_seed(0)
    layer = build_linear(S("btt_moe", experts=n_experts, top_k=top_k, layout=layout), d_in, d_out).double()
    lay = layer.layout
    plan = btt_plan(lay.m1, lay.m0, lay.n0, lay.n1, 1)
    w0 = torch.randn(layer.W0.shape, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(layer.W1.shape, dtype=torch.float64, requires_grad=True)
    experts, gates = routing_case(tokens=23, n_experts=n_experts, top_k=top_k)
    gates.requires_grad_(True)
    x = torch.randn(23, d_in, dtype=torch.float64, requires_grad=True)
    results = []
    for run in (
        lambda: K.routed_two_core_apply(x, w0.transpose(2, 3), w1.transpose(2, 3), plan, experts, gates, chunk=4),
        lambda: routed_reference(x, w0, w1, experts, gates, lay.m1, lay.m0),
    ):
        y = run()
        weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
        results.append((y.detach(), *torch.autograd.grad((y * weights).sum(), (x, w0, w1, gates))))
    for name, got, want in zip(("y", "x", "W0", "W1", "gates"), *results):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=name)
    assert results[0][2][1].abs().sum() == 0  # the expert without tokens gets no gradient


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_row_dots_sum_exact_products_in_at_least_fp32(dtype):
    """The gate gradient's per-slot dot products: bf16 rows are multiplied exactly and summed in fp32, so the result
    is the exact dot rounded once (to fp32 summation error), never worse than bf16's rounding of it."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(37, 300, generator=gen, dtype=torch.float64).to(dtype) for _ in range(2))
    exact = (a.double() * b.double()).sum(-1)
    got = K.row_dots(a, b)
    assert got.dtype == dtype and got.shape == (37,)
    scale = (a.double().abs() * b.double().abs()).sum(-1)
    bound = {torch.float64: 1e-13, torch.float32: 1e-5, torch.bfloat16: 2 ** -8}[dtype]
    assert ((got.double() - exact).abs() <= bound * scale).all()
    if dtype == torch.bfloat16:  # the exact dot, rounded once: bf16 products would round 300 times
        assert ((got.double() - exact).abs() <= 2 ** -8 * exact.abs() + 1e-5 * scale).all()


def test_routed_experts_in_float32_on_both_paths(path):
    torch.manual_seed(0)
    d, n_experts, top_k, tokens = 64, 4, 2, 40
    plan = btt_plan(8, 8, 8, 8, 1)
    w0 = torch.randn(n_experts, 8, 8, 8, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(n_experts, 8, 8, 8, dtype=torch.float64, requires_grad=True)
    experts, gates = routing_case(tokens=tokens, n_experts=n_experts, top_k=top_k)
    gates.requires_grad_(True)
    x = torch.randn(tokens, d, dtype=torch.float64, requires_grad=True)
    leaves = (x, w0, w1, gates)
    results = []
    for dtype, run in (
        (torch.float32, lambda a, b, c, g: K.routed_two_core_apply(
            a, b.transpose(2, 3), c.transpose(2, 3), plan, experts, g, chunk=16)),
        (torch.float64, lambda a, b, c, g: routed_reference(a, b, c, experts, g, 8, 8)),
    ):
        inputs = [t.detach().to(dtype).requires_grad_(True) for t in leaves]
        y = run(*inputs)
        weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
        grads = torch.autograd.grad((y * weights).sum(), inputs)
        results.append([y.detach().double(), *(g.double() for g in grads)])
    for name, got, want in zip(("y", "x", "W0", "W1", "gates"), *results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3, msg=name)


def test_routed_experts_gradcheck_and_flops():
    torch.manual_seed(0)
    plan = btt_plan(2, 3, 3, 2, 1)  # 6 -> 6
    w0 = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)  # (E, m1, m0, n0)
    w1 = torch.randn(3, 3, 2, 2, dtype=torch.float64, requires_grad=True)  # (E, n0, m1, n1)
    experts, gates = routing_case(tokens=5, n_experts=3, top_k=2)
    gates.requires_grad_(True)
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)

    def routed(a, b, c, g):
        return K.routed_two_core_apply(a, b.transpose(2, 3), c.transpose(2, 3), plan, experts, g, chunk=2)

    assert torch.autograd.gradcheck(routed, (x, w0, w1, gates))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        routed(x, w0, w1, gates)
    assert counter.get_total_flops() == 5 * 2 * plan.flops_per_token()  # k experts per token, nothing else


# --- what the fast path costs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=str)
def test_flop_counter_sees_the_analytic_flops(case):
    layer = build(case)
    if not isinstance(layer, (TensorTrain, Kronecker)):
        assert plan_and_cores(layer)[0].flops_per_token() == layer.flops_per_token()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        forward_with_chunk(layer, torch.randn(10, case.d_in), chunk=3)
    assert counter.get_total_flops() == 10 * layer.flops_per_token()


def activation_copies(
    layer: StructuredLinear, tokens: int, chunk: int, dtype: torch.dtype = torch.float32
) -> tuple[int, int]:
    """aten::copy_ calls of at least one chunk of activations (clones included), in forward and in backward."""
    x = torch.randn(tokens, layer.d_in, dtype=dtype, requires_grad=True)
    big = chunk * min(layer.d_in, layer.d_out)  # above every weight-sized copy in these cases
    counts = []
    for phase in ("forward", "backward"):
        if phase == "forward":
            with profile(record_shapes=True) as prof:
                y = forward_with_chunk(layer, x, chunk)
        else:
            grad = torch.randn_like(y)  # a dense gradient, as from a real loss
            with profile(record_shapes=True) as prof:
                y.backward(grad)
        counts.append(sum(1 for e in prof.events() if e.name == "aten::copy_" and numel(e.input_shapes[0]) >= big))
    return counts[0], counts[1]


def numel(shape: list[int]) -> int:
    n = 1
    for size in shape:
        n *= size
    return n


@pytest.mark.parametrize(
    "case,per_chunk",
    [
        (Case(S("btt"), 256, 256), (2, 2)),  # tokens in and out only: the intermediate is re-ordered by views
        (Case(S("btt", rank=4), 256, 256), (2, 3)),  # + one re-order of the rank-4 intermediate in backward
        (Case(S("monarch", blocks=16), 256, 256), (2, 2)),  # rank-1 BTT's schedule, its output shuffled by the store
        (Case(S("monarch", blocks=4), 256, 256), (2, 3)),  # b != mid: + one re-order of the middle in backward
        (Case(S("einsum", theta=BTT1), 256, 256), (2, 2)),  # the BTT point runs BTT's schedule
        (Case(S("kron"), 256, 256), (0, 2)),  # token-major: x and y are read and written in place
        (Case(S("tt", rank=4), 256, 256), (0, 2)),
    ],
    ids=lambda v: str(v) if isinstance(v, Case) else "",
)
def test_fast_path_copies_activations_only_at_the_ends(case, per_chunk, bmm_path):
    """bmm reads every operand in place: no per-batch clones, no copies beyond the layout changes named here."""
    layer = build(case)
    chunks = 4
    forward, backward = activation_copies(layer, tokens=chunks * 128, chunk=128)
    assert (forward, backward) == (chunks * per_chunk[0], chunks * per_chunk[1])


def test_batch_dense_names_the_layouts_onednn_reads_in_place():
    m = torch.zeros(4, 8, 16)
    assert batch_dense(m) and batch_dense(m.transpose(1, 2))  # row- or column-major blocks, r c apart
    assert not batch_dense(torch.zeros(8, 4, 16).transpose(0, 1))  # blocks interleaved: batch stride 16, not 128
    assert not batch_dense(torch.zeros(4, 8, 32)[:, :, :16])  # rows padded apart
    assert batch_dense(torch.zeros(1, 8, 32)[:, :, :16].contiguous()) and batch_dense(torch.zeros(3, 1, 5))


@pytest.mark.parametrize("case", [Case(S("btt"), 256, 256), Case(S("monarch", blocks=16), 256, 256)], ids=str)
def test_bf16_schedule_saves_core_twos_operand(case):
    """In bf16 the BTT / Monarch middle is a strided view oneDNN would copy: the forward copies it once, batch-dense,
    and saves that copy; in float32 MKL reads the view and nothing is copied."""
    plan = plan_and_cores(build(case))[0]
    assert bmm_schedule.mid_copied(plan, torch.bfloat16) and not bmm_schedule.mid_copied(plan, torch.float32)


@pytest.mark.parametrize(
    "case,copies",
    [(Case(S("btt"), 256, 256), (3, 3)), (Case(S("monarch", blocks=16), 256, 256), (3, 3)),
     (Case(S("btt", rank=4), 256, 256), (3, 3))],
    ids=lambda v: str(v) if isinstance(v, Case) else "",
)
def test_bf16_gemm_schedule_copies_only_layout_changes(case, copies):
    """On bf16 GEMMs every operand is batch_dense, so oneDNN clones nothing: forward = load x, regroup, store y;
    backward = load dy, regroup dz, store dx (the weight gradient of core 2 reads the saved regrouped z)."""
    layer = build(case).bfloat16()
    with use_policy(dataclasses.replace(FUSED_ALWAYS, native=False, amx=False, bf16_gemm=True)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert activation_copies(layer, tokens=512, chunk=512, dtype=torch.bfloat16) == copies


@pytest.mark.parametrize(
    "case", [Case(S("btt"), 256, 256), Case(S("btt", rank=2), 256, 256), Case(S("btt"), 512, 512),
             Case(S("btt"), 384, 1536), Case(S("einsum", theta=BTT1), 256, 256)], ids=str,
)
def test_native_path_copies_no_activations(case, native_path):
    """The compiled path reads x and writes y, z, dz and dx in place: no activation-sized copy at all."""
    layer = build(case)
    tables = native_tables(plan_and_cores(layer)[0], torch.zeros(1), current_policy())
    assert tables is not None and tables.direct
    assert activation_copies(layer, tokens=512, chunk=128) == (0, 0)


@pytest.mark.parametrize("blocks", [16, 4])
def test_native_monarch_gathers_its_shuffled_output(blocks, native_path):
    """Monarch's output shuffle P interleaves the blocks' outputs, which a GEMM cannot write in place: the compiled
    path copies y from the blocks' rows in one strided copy (and the gradient back in one), and copies nothing else."""
    layer = build(Case(S("monarch", blocks=blocks), 256, 256))
    tables = native_tables(plan_and_cores(layer)[0], torch.zeros(1), current_policy())
    assert tables is not None and not tables.direct
    stored_feature = tables.output_rows(torch.arange(256.0).view(1, 256))[0].long()
    block_of_feature = stored_feature // layer.layout.out_blk  # y feature s b + l comes from block l's row
    assert torch.equal(block_of_feature, torch.arange(256) % blocks)
    assert torch.equal(tables.stored_rows(tables.output_rows(torch.arange(256.0).view(1, 256))),
                       torch.arange(256.0).view(1, 256))  # the gradient's copy is its adjoint (here its inverse)
    assert activation_copies(layer, tokens=512, chunk=128) == (1, 1)


@pytest.mark.parametrize("case", [Case(S("kron"), 256, 256), Case(S("tt", rank=4), 256, 256)], ids=str)
def test_native_tensor_train_backward_copies_only_x(case, native_path):
    """With the compiled GEMM, dg0 reads dz in place: the backward copies x once per chunk, nothing else."""
    assert activation_copies(build(case), tokens=512, chunk=128) == (0, 4)


def plain_bmm_btt(x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, m1: int, n0: int) -> torch.Tensor:
    """Rank-1 BTT the straightforward way: token-major bmm, permute + reshape between the cores, autograd backward."""
    tokens = x.shape[0]
    z = torch.bmm(x.view(tokens, m1, -1).transpose(0, 1), w0)  # (m1, N, n0)
    z = z.permute(2, 1, 0).reshape(n0, tokens, m1)
    return torch.bmm(z, w1).transpose(0, 1).reshape(tokens, -1)


@pytest.mark.slow
def test_fast_path_beats_the_plain_bmm_path():
    """CPU time of forward + backward at d = 1024, one thread: the fused kernel at least 1.5x faster than plain bmm.

    Measured 1.7-2.2x here at 2048 tokens (about 3x at 4096); CPU time rather than wall time, so other processes on
    the machine matter less.
    """
    layer = build(Case(S("btt"), 1024, 1024))
    x = torch.randn(2048, 1024, requires_grad=True)
    paths = {"fast": lambda: layer(x), "plain": lambda: plain_bmm_btt(x, layer.W0, layer.W1, 32, 32)}
    torch.testing.assert_close(paths["fast"](), paths["plain"](), rtol=1e-4, atol=1e-3)
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for repeat in range(8):  # one thread (fixture)
        for name, run in paths.items():
            start = time.process_time()
            run().sum().backward()
            if repeat:  # the first round warms up
                seconds[name].append(time.process_time() - start)
    fast, plain = (min(seconds[name]) for name in ("fast", "plain"))  # the least-disturbed round of each
    assert plain / fast > 1.5, seconds


# --- input errors -------------------------------------------------------------------------------------------------
def test_wrong_width_and_chunk_are_named():
    layer = build(Case(S("btt"), 64, 64))
    plan, w0, w1 = plan_and_cores(layer)
    with pytest.raises(ValueError, match="d_in=64"):
        K.two_core_apply(torch.randn(3, 48), w0, w1, plan)
    with pytest.raises(ValueError, match="chunk=0"):
        K.two_core_apply(torch.randn(3, 64), w0, w1, plan, chunk=0)


def test_inconsistent_plan_is_rejected():
    with pytest.raises(ValueError, match="mid_axes flatten"):
        TwoCorePlan(
            d_in=64, d_out=64, in_axes=(8, 8), in_perm=(0, 1), core1=(8, 8, 8, 1), mid_axes=(8, 4), mid_perm=(1, 0),
            core2=(8, 8, 8, 1), out_axes=(8, 8), out_perm=(0, 1),
        )
