"""Fast CPU forward + backward of the two-core structures (BTT, Monarch, Kronecker, 2-core TT, Einsum).

Every one of them is y = x W^T with W a product of two batched (block) matrices and a fixed permutation of
features between them. Done with token-major bmm calls (the plain path), most of the time goes into copies:
torch.bmm reads a (tokens, features) operand whose blocks sit 4 KB apart one token row at a time, and the
permute/reshape between the cores materialises the whole intermediate. Here the work runs instead on
*feature-major* chunks of tokens, the layout MKL's small GEMMs are fastest on (weights on the left, tokens as
columns), with one autograd Function doing forward and backward by hand:

    per chunk of T tokens      (xt: (b1, k1, c1 T), zt: (b1, p1, c1 T), z2: (b2, k2, c2 T), yt: (b2, p2, c2 T))
    forward   xt = in_perm(x)                       one copy, x chunk -> feature-major (zero-padded)
              zt = w0 @ xt                          bmm, w0: (b1, p1, k1)
              z2 = mid_perm(zt)                     a view when the strides allow it, else one copy
              yt = w1 @ z2                          bmm, w1: (b2, p2, k2)
              y  = out_perm(yt)                     one copy back to token-major (truncated)
    backward  gt = out_perm^-1(g);  dw1 += gt z2^T;  dz2 = w1^T gt;  dzt = mid_perm^-1(dz2)
              dw0 += dzt xt^T;  dxt = w0^T dzt;  dx = in_perm^-1(dxt)            (4 bmm, 2-3 copies)

Chunks keep every copy cache-resident, and xt and zt are saved for the backward. Axes that one core does not
touch are folded into its GEMM columns (c1, c2: e.g. the inner input axis for a Kronecker factor), and a core
whose weight does not depend on its batch axis gets an expanded (stride-0) weight, which bmm reads as is.
`TwoCorePlan` says how a structure's axes map onto this; each structure builds its plan and its two core views
(btt_plan, monarch_plan, tt_plan, einsum_plan) and calls `two_core_apply`, which uses the fast Function on CPU
and otherwise (CUDA, meta tensors, double backward with fast=False) the plain reference contraction, which
computes the same thing through autograd. The forward issues exactly the two bmm calls per chunk, so torch's
FlopCounterMode sees the structures' analytic FLOPs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# Chunk size: CHUNK_FLOATS / (widest of input, intermediate, output) tokens, at least MIN_CHUNK_TOKENS. A chunk's
# operands (4 MB each) stay in L2/L3, yet each bmm is large enough (~1 ms at d = 1024) that dispatch and thread
# start-up do not show. Measured fwd+bwd at 4096 tokens, 1 thread: 512-2048 tokens per chunk is 5-30% faster than
# one chunk of 4096, within 5% of each other; fewer, larger ops also suffer less when other processes hold the cores.
CHUNK_FLOATS = 1 << 20
MIN_CHUNK_TOKENS = 128


@dataclass(frozen=True)
class TwoCorePlan:
    """How x (N, d_in) -> y (N, d_out) maps onto two batched GEMMs over feature-major chunks.

    in_axes: the (zero-padded) input features split row-major into axes, prod >= d_in.
    in_perm: the order of those axes in core 1's operand, flattened to (b1, k1, c1): b1 batch, k1 contracted,
             c1 carried along as extra GEMM columns.
    mid_axes: core 1's output (b1, p1, c1) split row-major into axes; mid_perm orders them as core 2's operand
              (b2, k2, c2).
    out_axes: core 2's output (b2, p2, c2) split row-major into axes; out_perm orders them as the (padded)
              output features, prod >= d_out; features beyond d_out are dropped.
    """

    d_in: int
    d_out: int
    in_axes: tuple[int, ...]
    in_perm: tuple[int, ...]
    core1: tuple[int, int, int, int]  # (b1, p1, k1, c1): w0 is (b1, p1, k1)
    mid_axes: tuple[int, ...]
    mid_perm: tuple[int, ...]
    core2: tuple[int, int, int, int]  # (b2, p2, k2, c2): w1 is (b2, p2, k2)
    out_axes: tuple[int, ...]
    out_perm: tuple[int, ...]

    def without_unit_axes(self) -> "TwoCorePlan":
        """The same plan with size-1 axes dropped (so e.g. an einsum point with beta = 1 runs BTT's plain copies)."""

        def squeeze(axes: tuple[int, ...], perm: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
            keep = [i for i, size in enumerate(axes) if size != 1]
            renumber = {old: new for new, old in enumerate(keep)}
            return tuple(axes[i] for i in keep), tuple(renumber[i] for i in perm if i in renumber)

        in_axes, in_perm = squeeze(self.in_axes, self.in_perm)
        mid_axes, mid_perm = squeeze(self.mid_axes, self.mid_perm)
        out_axes, out_perm = squeeze(self.out_axes, self.out_perm)
        return dataclasses.replace(
            self, in_axes=in_axes, in_perm=in_perm, mid_axes=mid_axes, mid_perm=mid_perm, out_axes=out_axes,
            out_perm=out_perm,
        )

    def __post_init__(self) -> None:
        b1, p1, k1, c1 = self.core1
        b2, p2, k2, c2 = self.core2
        checks = {
            "in_axes cover d_in": math.prod(self.in_axes) >= self.d_in,
            "in_axes flatten to (b1, k1, c1)": math.prod(self.in_axes) == b1 * k1 * c1,
            "mid_axes flatten to (b1, p1, c1) and (b2, k2, c2)": math.prod(self.mid_axes) == b1 * p1 * c1 == b2 * k2 * c2,
            "out_axes flatten to (b2, p2, c2)": math.prod(self.out_axes) == b2 * p2 * c2,
            "out_axes cover d_out": math.prod(self.out_axes) >= self.d_out,
        }
        for name, axes, perm in [("in", self.in_axes, self.in_perm), ("mid", self.mid_axes, self.mid_perm),
                                 ("out", self.out_axes, self.out_perm)]:
            checks[f"{name}_perm is a permutation of {name}_axes"] = sorted(perm) == list(range(len(axes)))
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"inconsistent TwoCorePlan {self}: {failed}")

    @property
    def in_size(self) -> int:
        return math.prod(self.in_axes)

    @property
    def out_size(self) -> int:
        return math.prod(self.out_axes)

    @functools.cached_property
    def sides(self) -> tuple[_Side, _Side]:
        """The input end (x -> core 1's operand) and the output end (core 2's result -> y)."""
        b1, _, k1, c1 = self.core1
        b2, p2, _, c2 = self.core2
        src = _Side(tuple(self.in_axes[i] for i in self.in_perm), _inverse(self.in_perm), b1, k1, c1, self.d_in)
        dst = _Side(self.out_axes, self.out_perm, b2, p2, c2, self.d_out)
        return src, dst

    def chunk_tokens(self) -> int:
        """Tokens per chunk: CHUNK_FLOATS over the widest of input, intermediate and output (at least MIN_CHUNK_TOKENS)."""
        b1, p1, _, c1 = self.core1
        return max(MIN_CHUNK_TOKENS, CHUNK_FLOATS // max(self.in_size, b1 * p1 * c1, self.out_size))

    def layout_moves(self) -> int:
        """Activation-sized copies per forward + backward, a general permute counted twice (it runs at about half the
        speed of a row copy or a blocked 2-D transpose, measured): breaks ties between equally cheap plans."""
        b1, p1, _, c1 = self.core1
        b2, _, k2, c2 = self.core2
        ends = sum(2 if side.rows or side.in_order else 4 for side in self.sides)  # a load and a store each
        mid_moved = tuple(self.mid_axes[i] for i in self.mid_perm)
        forward_copy = not _regroup_is_view(self.mid_axes, self.mid_perm, (b2, k2, c2))  # again for dW1
        backward_copy = not _regroup_is_view(mid_moved, _inverse(self.mid_perm), (b1, p1, c1))
        return ends + 2 * forward_copy + backward_copy

    def flops_per_token(self) -> int:
        """2 x MACs of the two GEMMs: b1 p1 k1 c1 + b2 p2 k2 c2 per token."""
        return 2 * (math.prod(self.core1) + math.prod(self.core2))


# --- layout moves ------------------------------------------------------------------------------------------
def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for pos, axis in enumerate(perm):
        inv[axis] = pos
    return tuple(inv)


def _pad_features(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else F.pad(x, (0, size - x.shape[-1]))


def _moved(z: torch.Tensor, axes: tuple[int, ...], perm: tuple[int, ...], t: int) -> torch.Tensor:
    """z (contiguous, features `axes` x t tokens) with its feature axes reordered by perm (a strided view)."""
    return z.view(*axes, t).permute(*perm, len(axes))


def _as_view(moved: torch.Tensor, target: tuple[int, ...]) -> torch.Tensor | None:
    """moved reshaped to target without copying, or None when its strides do not merge that way."""
    try:
        return moved.view(target)
    except RuntimeError:
        return None


def _regroup(
    z: torch.Tensor, axes: tuple[int, ...], perm: tuple[int, ...], shape: tuple[int, int, int], t: int,
    buf: torch.Tensor | None = None,
) -> torch.Tensor:
    """z's features reordered by perm, as (shape[0], shape[1], shape[2] t): a view when the strides line up (BTT,
    Monarch with b = mid, TT forward), else a copy into buf (a new tensor without one)."""
    moved = _moved(z, axes, perm, t)
    target = (shape[0], shape[1], shape[2] * t)
    view = _as_view(moved, target)
    if view is not None:
        return view
    if buf is None:
        return moved.reshape(target)
    out = buf[: moved.numel()].view(moved.shape)
    out.copy_(moved)
    return out.view(target)


@functools.cache
def _regroup_is_view(axes: tuple[int, ...], perm: tuple[int, ...], shape: tuple[int, int, int]) -> bool:
    """Whether _regroup is free for these axes; all strides scale with the token count, so 2 tokens decide."""
    moved = _moved(torch.empty(*axes, 2, device="meta"), axes, perm, 2)
    return _as_view(moved, (shape[0], shape[1], shape[2] * 2)) is not None


@dataclass(frozen=True)
class _Side:
    """One end of the layer: token-major features (t, width) <-> a GEMM operand (b, k, c t).

    The operand's features are `axes` (row-major, flattening to (b, k, c)); the token-major features are the same
    axes in the order `to_tokens`, zero-padded / truncated to `width`. When c = 1 and the order is unchanged, the
    operand is kept token-major as (b, t, k) blocks ("rows": a copy of k-float runs, and the GEMM reads or writes
    it transposed); otherwise it is feature-major (b, k, c t) (a blocked 2-D transpose, or a general permute).
    """

    axes: tuple[int, ...]
    to_tokens: tuple[int, ...]
    b: int
    k: int
    c: int
    width: int

    @property
    def size(self) -> int:
        return self.b * self.k * self.c

    @property
    def in_order(self) -> bool:
        return self.to_tokens == tuple(range(len(self.axes)))

    @property
    def rows(self) -> bool:
        return self.c == 1 and self.in_order

    def view(self, buf: torch.Tensor, t: int) -> torch.Tensor:
        """The (b, k, c t) operand held in buf (filled by load or saved)."""
        if self.rows:
            return buf.view(self.b, t, self.k).transpose(1, 2)
        return buf.view(self.b, self.k, self.c * t)

    def load(self, x: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
        """Copy token-major x (t, width) into buf as the operand; returns the (b, k, c t) view."""
        t = x.shape[0]
        x = _pad_features(x, self.size)
        if self.rows:
            buf.view(self.b, t, self.k).copy_(x.view(t, self.b, self.k).transpose(0, 1))
        elif self.in_order and x.is_contiguous():
            buf.view(-1, t).copy_(x.t())  # a plain 2-D transpose: torch copies it in cache-sized blocks
        else:
            token_axes = [self.axes[i] for i in self.to_tokens]
            src = x.view(t, *token_axes).permute(*[1 + j for j in _inverse(self.to_tokens)], 0)
            buf.view(*self.axes, t).copy_(src)
        return self.view(buf, t)

    def gemm(self, a: torch.Tensor, m: torch.Tensor, buf: torch.Tensor, t: int) -> torch.Tensor:
        """a @ m into buf as a (b, k, c t) result, computed token-major ((a @ m)^T = m^T a^T) when stored as rows."""
        buf = buf[: self.size * t]
        if self.rows:
            return torch.bmm(m.transpose(1, 2), a.transpose(1, 2), out=buf.view(self.b, t, self.k)).transpose(1, 2)
        return torch.bmm(a, m, out=buf.view(self.b, self.k, self.c * t))

    def store(self, res: torch.Tensor, out: torch.Tensor) -> None:
        """Copy the operand-shaped result res (from gemm) into token-major out (t, width), truncating padding."""
        t = out.shape[0]
        if self.rows:
            blocks = res.transpose(1, 2)  # (b, t, k), contiguous
            if self.width == self.size:
                out.view(t, self.b, self.k).transpose(0, 1).copy_(blocks)
            else:
                out.copy_(blocks.transpose(0, 1).reshape(t, self.size)[:, : self.width])
        elif self.in_order:
            out.copy_(res.reshape(-1, t)[: self.width].t())  # a plain 2-D transpose (blocked copy)
        else:
            moved = res.reshape(*self.axes, t).permute(len(self.axes), *self.to_tokens)
            out.copy_(moved.reshape(t, self.size)[:, : self.width])


# --- the fused Function ------------------------------------------------------------------------------------
class _TwoCoreFunction(torch.autograd.Function):
    """Forward and backward of two_core_apply on chunks of tokens (module docstring); x is (N, d_in).

    Every per-chunk result goes into a buffer allocated once per call: on these machines fresh large allocations
    cost page faults comparable to the copies themselves.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan, chunk: int) -> torch.Tensor:
        src, dst = plan.sides
        b1, p1, _, c1 = plan.core1
        b2, _, k2, c2 = plan.core2
        n, mid = x.shape[0], b1 * p1 * c1
        x_all = x.new_empty(n * src.size)  # core 1's operand, chunk after chunk (saved for dW0)
        z_all = x.new_empty(n * mid)  # core 1's output (b1, p1, c1 t), chunk after chunk (saved for dW1)
        y = x.new_empty(n, plan.d_out)
        rows = min(chunk, n)
        y_buf, z_buf = x.new_empty(dst.size * rows), x.new_empty(mid * rows)
        for s in range(0, n, chunk):
            t = min(chunk, n - s)
            xt = src.load(x[s : s + t], x_all[s * src.size : (s + t) * src.size])
            zt = torch.bmm(w0, xt, out=z_all[s * mid : (s + t) * mid].view(b1, p1, c1 * t))
            z2 = _regroup(zt, plan.mid_axes, plan.mid_perm, (b2, k2, c2), t, z_buf)
            dst.store(dst.gemm(w1, z2, y_buf, t), y[s : s + t])
        ctx.save_for_backward(x_all, z_all, w0, w1)
        ctx.plan, ctx.chunk = plan, chunk
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        x_all, z_all, w0, w1 = ctx.saved_tensors
        plan: TwoCorePlan = ctx.plan
        chunk: int = ctx.chunk
        src, dst = plan.sides
        b1, p1, k1, c1 = plan.core1
        b2, p2, k2, c2 = plan.core2
        need_x, need_w0, need_w1 = ctx.needs_input_grad[:3]
        n, mid = g.shape[0], b1 * p1 * c1
        dx = g.new_empty(n, plan.d_in) if need_x else None
        dw0 = g.new_zeros(b1, p1, k1) if need_w0 else None
        dw1 = g.new_zeros(b2, p2, k2) if need_w1 else None
        rows = min(chunk, n)
        g_buf, z_buf, dz_buf, dzt_buf, dx_buf = (g.new_empty(size * rows) for size in (dst.size, mid, mid, mid, src.size))
        mid_moved = tuple(plan.mid_axes[i] for i in plan.mid_perm)
        mid_back = _inverse(plan.mid_perm)
        for s in range(0, n, chunk):
            t = min(chunk, n - s)
            gt = dst.load(g[s : s + t], g_buf[: dst.size * t])  # (b2, p2, c2 t); the dropped (padding) outputs get gradient 0
            zt = z_all[s * mid : (s + t) * mid].view(b1, p1, c1 * t)
            if need_w1:
                z2 = _regroup(zt, plan.mid_axes, plan.mid_perm, (b2, k2, c2), t, z_buf)
                dw1.baddbmm_(gt, z2.transpose(1, 2))
            if need_x or need_w0:
                dz2 = torch.bmm(w1.transpose(1, 2), gt, out=dz_buf[: mid * t].view(b2, k2, c2 * t))
                dzt = _regroup(dz2, mid_moved, mid_back, (b1, p1, c1), t, dzt_buf)
                if need_w0:
                    xt = src.view(x_all[s * src.size : (s + t) * src.size], t)
                    dw0.baddbmm_(dzt, xt.transpose(1, 2))
                if need_x:
                    src.store(src.gemm(w0.transpose(1, 2), dzt, dx_buf, t), dx[s : s + t])
        return dx, dw0, dw1, None, None


# --- entry points ------------------------------------------------------------------------------------------
def reference_apply(x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan) -> torch.Tensor:
    """The same map with plain differentiable ops on the whole batch: the fallback and the tests' reference."""
    n = x.shape[0]
    b1, p1, k1, c1 = plan.core1
    b2, p2, k2, c2 = plan.core2
    xt = _pad_features(x, plan.in_size).view(n, *plan.in_axes).permute(*[1 + i for i in plan.in_perm], 0)
    zt = torch.matmul(w0, xt.reshape(b1, k1, c1 * n))
    yt = torch.matmul(w1, _regroup(zt, plan.mid_axes, plan.mid_perm, (b2, k2, c2), n))
    y = yt.reshape(*plan.out_axes, n).permute(len(plan.out_axes), *plan.out_perm).reshape(n, plan.out_size)
    return y[:, : plan.d_out]


def uses_fast_path(x: torch.Tensor) -> bool:
    """The feature-major Function is tuned for (and tested on) CPU; other devices take the reference path."""
    return x.device.type == "cpu"


def two_core_apply(
    x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan, fast: bool = True,
    chunk: int | None = None,
) -> torch.Tensor:
    """y = x W^T of a two-core structure; x (..., d_in) -> (..., d_out); w0 (b1, p1, k1), w1 (b2, p2, k2).

    fast=False (or a non-CPU tensor) uses reference_apply, which supports double backward.
    """
    if x.shape[-1] != plan.d_in:
        raise ValueError(f"input has {x.shape[-1]} features, the layer expects d_in={plan.d_in}")
    chunk = plan.chunk_tokens() if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1 (tokens per chunk)")
    lead = x.shape[:-1]
    flat = x.reshape(-1, plan.d_in)
    if fast and uses_fast_path(flat) and flat.shape[0] > 0:
        y = _TwoCoreFunction.apply(flat, w0, w1, plan, chunk)
    else:
        y = reference_apply(flat, w0, w1, plan)
    return y.reshape(*lead, plan.d_out)


# --- plans and core views of each structure ----------------------------------------------------------------
@functools.cache
def btt_plan(m1: int, m0: int, n0: int, n1: int, rank: int) -> TwoCorePlan:
    """BTT: x[i1, i0] -> z[i1, (rho, j0)] (block i1) -> y[j0, j1] (block j0 contracts (i1, rho)).

    Core 1's outputs are ordered (rho, j0), so core 2's operand for block j0, rows (i1, rho), is a strided view.
    """
    return TwoCorePlan(
        d_in=m1 * m0, d_out=n0 * n1,
        in_axes=(m1, m0), in_perm=(0, 1), core1=(m1, rank * n0, m0, 1),
        mid_axes=(m1, rank, n0), mid_perm=(2, 0, 1), core2=(n0, n1, m1 * rank, 1),
        out_axes=(n0, n1), out_perm=(0, 1),
    )


def btt_cores(w0: torch.Tensor, w1: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, out, in) views of BTT cores W0 (m1, m0, n0 r) and W1 (n0, m1 r, n1) for btt_plan (W0 copied when r > 1)."""
    m1, m0, n0r = w0.shape
    n0 = n0r // rank
    core0 = w0.view(m1, m0, n0, rank).transpose(2, 3).reshape(m1, m0, rank * n0).transpose(1, 2)
    return core0, w1.transpose(1, 2)


@functools.cache
def monarch_plan(d_in: int, d_out: int, blocks: int, in_blk: int, mid: int, out_blk: int) -> TwoCorePlan:
    """Monarch: h[k, q] = R_k x[k, :]; the perfect shuffle g[l, i] = h[k, q] with q b + k = l mid + i; y[l] = L_l g[l]."""
    return TwoCorePlan(
        d_in=d_in, d_out=d_out,
        in_axes=(blocks, in_blk), in_perm=(0, 1), core1=(blocks, mid, in_blk, 1),
        mid_axes=(blocks, mid), mid_perm=(1, 0), core2=(blocks, out_blk, mid, 1),
        out_axes=(blocks, out_blk), out_perm=(0, 1),
    )


@functools.cache
def tt_plan(in_factors: tuple[int, int], out_factors: tuple[int, int], rank: int) -> TwoCorePlan:
    """2-core TT (Kronecker at rank 1), core 0 first: x[i1, i2] -> z[(j1, s), i2] -> y[j1, j2].

    Core 1 is one GEMM with the untouched axis i2 as extra columns; core 2 runs per j1 with a shared weight.
    """
    (n1, n2), (m1, m2) = in_factors, out_factors
    return TwoCorePlan(
        d_in=n1 * n2, d_out=m1 * m2,
        in_axes=(n1, n2), in_perm=(0, 1), core1=(1, m1 * rank, n1, n2),
        mid_axes=(m1, rank, n2), mid_perm=(0, 1, 2), core2=(m1, m2, rank * n2, 1),
        out_axes=(m1, m2), out_perm=(0, 1),
    )


def tt_cores(core0: torch.Tensor, core1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, out, in) views of TT cores (m1, r, 1, n1) and (m2, 1, r, n2) for tt_plan; core 2's is expanded over j1."""
    m1, r, _, n1 = core0.shape
    m2, _, _, n2 = core1.shape
    return core0.reshape(1, m1 * r, n1), core1.reshape(1, m2, r * n2).expand(m1, m2, r * n2)


@functools.cache
def einsum_plan(sizes: tuple[int, ...], d_in: int, d_out: int, a_first: bool) -> TwoCorePlan:
    """Einsum theta with axis sizes (alpha, beta, gamma, delta, epsilon, phi, rho); x[g, b, a] -> y[f, e, d].

    A-first: core 1 (per g) contracts a into (f, d, r), carrying b; core 2 (per f) contracts (r, g, b) into e,
    carrying d. B-first swaps the roles: core 1 contracts b into (f, e, r) carrying a, core 2 (r, g, a) into d.
    """
    a, b, g, d, e, f, r = sizes
    if a_first:  # operand (g | a | b), z axes (g, f, d, r, b) -> (f | r, g, b | d), y axes (f, e, d)
        plan = TwoCorePlan(
            d_in=d_in, d_out=d_out,
            in_axes=(g, b, a), in_perm=(0, 2, 1), core1=(g, f * d * r, a, b),
            mid_axes=(g, f, d, r, b), mid_perm=(1, 3, 0, 4, 2), core2=(f, e, r * g * b, d),
            out_axes=(f, e, d), out_perm=(0, 1, 2),
        )
    else:  # operand (g | b | a), z axes (g, f, e, r, a) -> (f | r, g, a | e), y axes (f, d, e) -> (f, e, d)
        plan = TwoCorePlan(
            d_in=d_in, d_out=d_out,
            in_axes=(g, b, a), in_perm=(0, 1, 2), core1=(g, f * e * r, b, a),
            mid_axes=(g, f, e, r, a), mid_perm=(1, 3, 0, 4, 2), core2=(f, d, r * g * a, e),
            out_axes=(f, d, e), out_perm=(0, 2, 1),
        )
    return plan.without_unit_axes()


def einsum_cores(A: torch.Tensor, B: torch.Tensor, a_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, out, in) views of the einsum cores A[f, d, r, g, a], B[f, e, r, g, b] for einsum_plan (no copies)."""
    f, d, r, g, a = A.shape
    e, b = B.shape[1], B.shape[4]
    if a_first:
        return A.permute(3, 0, 1, 2, 4).reshape(g, f * d * r, a), B.reshape(f, e, r * g * b)
    return B.permute(3, 0, 1, 2, 4).reshape(g, f * e * r, b), A.reshape(f, d, r * g * a)
