"""Fast CPU forward + backward of the two-core structures (BTT, Monarch, Einsum; 2-core TT and Kronecker).

Each is y = x W^T with W a product of two batched (block) matrices and a fixed permutation of features between
them. Done the plain way (token-major bmm calls, permute + reshape between the cores, autograd for the backward)
most of the time goes into copies: the intermediate is materialised in every direction, and bmm reads blocks of a
(tokens, features) operand 4 KB apart, one 128-byte run at a time. Here one autograd Function does forward and
backward by hand on chunks of tokens, in the layouts MKL's small batched GEMMs run fastest on:

    per chunk of t tokens            (xt: (b1, k1, c1 t), zt: (b1, p1, c1 t), z2: (b2, k2, c2 t), yt: (b2, p2, c2 t))
    forward   xt = load(x)                 one copy: token-major x -> core 1's operand (zero-padded)
              zt = w0 @ xt                 bmm, w0: (b1, p1, k1), zt feature-major
              z2 = regroup(zt)             a view when the strides allow it (BTT, Monarch), else a copy
              yt = w1 @ z2                 bmm, w1: (b2, p2, k2)
              y  = store(yt)               one copy back to token-major (truncated)
    backward  gt = load(g);  dw1 += gt z2^T;  dz2 = w1^T gt;  dzt = regroup^-1(dz2)
              dw0 += dzt xt^T;  dxt = w0^T dzt;  dx = store(dxt)                     (4 GEMMs, 2-3 copies)

The ends (`_Side`) keep a block-diagonal core's operand token-major as (b, t, k) blocks ("rows": a copy of k-float
runs, 3x cheaper here than the element-wise 2-D transpose a feature-major operand needs), and the GEMM reads or
writes it transposed. Axes a core does not touch are carried as extra GEMM columns (c1, c2), and a weight shared
across a core's batch is an expanded (stride-0) view, which bmm reads in place. `TwoCorePlan` maps a structure's
axes onto this (btt_plan, monarch_plan, einsum_plan); xt and zt are saved for the backward.

The 2-core Tensor-Train (Kronecker at rank 1) has a cheaper schedule that copies nothing in the forward:
core 0 runs per token on x read in place, core 1 as one plain GEMM (`tt2_apply`, `_TensorTrain2Function`).

Mixtures of two-core experts (BTT-MoE) run every routed expert inside one Function (`routed_two_core_apply`):
the slots sorted by expert are gathered once, each expert runs the schedule above on its segment, and the gated
outputs are added back with one index_add, so dispatch costs a few passes over the slots rather than a gather,
a concatenation and an autograd scatter per expert.

Compiled path: where the offset GEMM of native.py is available (built by pip install, AVX2 CPU), float32
two-core plans run on token-major activations with no copies at all instead (token_major.py), when their middle
is at most NATIVE_MAX_EXPANSION x wider than their ends, their blocks are multiples of NATIVE_COLUMN_MULTIPLE
wide and the call is large enough (NATIVE_MIN_ELEMENTS). The bmm schedule above remains for the rest, for
float64, and under a torch dispatch mode such as FlopCounterMode (which cannot see compiled GEMMs).

Fallback: on other devices (CUDA, meta tensors), under CPU autocast, for two-core calls below
FUSED_MIN_ELEMENTS or with fast=False, the same contraction runs with plain differentiable ops (`reference_apply`,
`tt2_reference`), which also support double backward; the fast backward is once-differentiable. The fast forward
issues the same GEMM FLOPs as the analytic counts (bmm / mm, which torch's FlopCounterMode sees), chunk by chunk.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.utils._python_dispatch import _get_current_dispatch_mode

from scaling.structures import native
from scaling.structures.token_major import TokenMajorPlan, token_major_plan

# Chunk size: CHUNK_FLOATS / max(d_in, d_out) tokens (4096 at d = 1024), at least MIN_CHUNK_TOKENS. Measured
# fwd+bwd at d = 1024, 4096 tokens: with idle OpenMP threads sleeping (OMP_WAIT_POLICY=PASSIVE), 512-4096 tokens per
# chunk are within 10% of each other, cache-sized chunks slightly ahead (rank 4: within 3%); with the default
# spin-waiting and other processes on the 2 cores every parallel region can stall, and one chunk of 4096 ran 2x
# faster than four of 1024. So chunks are large (few ops per layer) and bound only the scratch buffers' size.
CHUNK_FLOATS = 1 << 22
MIN_CHUNK_TOKENS = 128
# Calls below FUSED_MIN_ELEMENTS (tokens x the wider end) run the plain ops of reference_apply: there the fused
# Function's fixed cost per call (chunks, scratch buffers, hand-written backward) outweighs the copies it saves.
# Measured fwd+bwd of one layer, plain / fused bmm time: BTT rank 1 0.69-0.92, Monarch 0.71-0.87, Einsum
# 0.47-0.87 below 2^18 (d = 64 x 512 tokens to 256 x 512); 0.75-1.14 from 2^18 up, where the compiled path
# (from 2^19) beats both. In GPT-2 (4 layers, BTT rank 1): 1.3x the tokens/s at d = 64 x 512 tokens a step,
# but 0.94-0.97x at d = 128 x 2,048 with the plain path also at 2^18 (so that is where it stops).
FUSED_MIN_ELEMENTS = 1 << 18
# The compiled path (native.py, token_major.py) runs every GEMM of the forward (or backward) on one tile of
# NATIVE_TILE_TOKENS tokens before the next tile; 16 and 32 measured within 5% of each other, 128 10% slower.
# It is used for plans whose middle width is at most NATIVE_MAX_EXPANSION x the wider end: measured fwd+bwd at
# d = 1024 (OMP_WAIT_POLICY=PASSIVE), vs the bmm path, BTT rank 1 1.35x and Monarch 1.4x faster, rank 2 1.1x,
# but rank 4 1.2x slower (its weight gradients stream 4x wider intermediates).
# Below NATIVE_MIN_ELEMENTS (tokens x the wider end) MKL's batched GEMM beats it on the small blocks (inner
# dimension 16-24), even with the offset tables cached: measured fwd+bwd of BTT rank 1, compiled / bmm time,
# 1.3-1.45 at d = 256 x 1,024 and 2,048 tokens and at 384 x 2,048, 1.05 at 512 x 1,024, 0.9-1.1 at 512 x 2,048.
# Its micro-kernel holds 8 columns per register, so blocks whose sizes are not multiples of
# NATIVE_COLUMN_MULTIPLE waste part of one on every strip; fwd+bwd of Monarch with 20, 23, 28 and 39 blocks
# (d = 384, 512, 768, 1536) measured 1.3x, 1.0x, 1.0-1.1x and 1.03x the bmm path's time, so those stay on bmm.
NATIVE_TILE_TOKENS = 16
NATIVE_MAX_EXPANSION = 2
NATIVE_MIN_ELEMENTS = 1 << 19
NATIVE_COLUMN_MULTIPLE = 8


@dataclass(frozen=True)
class TwoCorePlan:
    """How x (N, d_in) -> y (N, d_out) maps onto two batched GEMMs over chunks of tokens.

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

    def without_unit_axes(self) -> TwoCorePlan:
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
            "mid_axes flatten to (b1, p1, c1) and (b2, k2, c2)":
                math.prod(self.mid_axes) == b1 * p1 * c1 == b2 * k2 * c2,
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
        """Tokens per chunk: CHUNK_FLOATS over the wider of input and output, at least MIN_CHUNK_TOKENS."""
        return max(MIN_CHUNK_TOKENS, CHUNK_FLOATS // max(self.in_size, self.out_size))

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
    Monarch, TT forward), else a copy into buf (a new tensor without one)."""
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


@dataclass(frozen=True)
class _Side:
    """One end of the layer: token-major features (t, width) <-> a GEMM operand (b, k, c t).

    The operand's features are `axes` (row-major, flattening to (b, k, c)); the token-major features are the same
    axes in the order `to_tokens`, zero-padded / truncated to `width`. When c = 1 and the order is unchanged, the
    operand is kept token-major as (b, t, k) blocks ("rows": a copy of k-float runs, and the GEMM reads or writes
    it transposed); so it is when c = 1 and the token-major features interleave the blocks, (k, b) (Monarch's
    output shuffle P: one plain 2-D transpose between (b, t k) and (t k, b)); otherwise it is feature-major
    (b, k, c t) (a blocked 2-D transpose, or a general permute).
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
    def interleaved(self) -> bool:
        """Token-major features ordered (k, b): the blocks' outputs interleaved (Monarch's P)."""
        return self.c == 1 and self.axes == (self.b, self.k) and self.to_tokens == (1, 0)

    @property
    def rows(self) -> bool:
        return self.c == 1 and (self.in_order or self.interleaved)

    def view(self, buf: torch.Tensor, t: int) -> torch.Tensor:
        """The (b, k, c t) operand held in buf (filled by load or saved)."""
        if self.rows:
            return buf.view(self.b, t, self.k).transpose(1, 2)
        return buf.view(self.b, self.k, self.c * t)

    def load(self, x: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
        """Copy token-major x (t, width) into buf as the operand; returns the (b, k, c t) view."""
        t = x.shape[0]
        x = _pad_features(x, self.size)
        if self.interleaved:
            buf.view(self.b, t * self.k).copy_(x.reshape(t * self.k, self.b).t())
        elif self.rows:
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
        if self.interleaved:
            shuffled = res.transpose(1, 2).reshape(self.b, t * self.k).t()  # (t k, b): a plain 2-D transpose
            if self.width == self.size:
                out.view(t * self.k, self.b).copy_(shuffled)
            else:
                out.copy_(shuffled.reshape(t, self.size)[:, : self.width])
        elif self.rows:
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


# --- the fused Functions -----------------------------------------------------------------------------------
# Rows of x are processed in pieces (expert, start, stop): chunks of the batch, or of each expert's segment of the
# routed slots. Weights carry a leading expert axis (size 1 for a plain layer). Every per-piece result goes into a
# buffer allocated once per call: on these machines fresh large allocations cost page faults comparable to the
# copies themselves.
Piece = tuple[int, int, int]


def _pieces(counts: list[int], chunk: int) -> list[Piece]:
    """(expert, start, stop) row ranges: each expert's consecutive segment of `counts[e]` rows, cut into chunks."""
    pieces, start = [], 0
    for expert, count in enumerate(counts):
        pieces += [(expert, s, min(s + chunk, start + count)) for s in range(start, start + count, chunk)]
        start += count
    return pieces


def _forward_pieces(
    x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan, pieces: list[Piece]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y = x W_e^T row range by row range; x (rows, d_in), w0 (E, b1, p1, k1), w1 (E, b2, p2, k2).

    Returns (x_all, z_all, y): core 1's operands and outputs piece after piece (saved for the backward), and y.
    """
    src, dst = plan.sides
    b1, p1, _, c1 = plan.core1
    b2, _, k2, c2 = plan.core2
    n, mid = x.shape[0], b1 * p1 * c1
    x_all, z_all = x.new_empty(n * src.size), x.new_empty(n * mid)
    y = x.new_empty(n, plan.d_out)
    rows = max((stop - start for _, start, stop in pieces), default=0)
    y_buf, z_buf = x.new_empty(dst.size * rows), x.new_empty(mid * rows)
    for e, start, stop in pieces:
        t = stop - start
        xt = src.load(x[start:stop], x_all[start * src.size : stop * src.size])
        zt = torch.bmm(w0[e], xt, out=z_all[start * mid : stop * mid].view(b1, p1, c1 * t))
        z2 = _regroup(zt, plan.mid_axes, plan.mid_perm, (b2, k2, c2), t, z_buf)
        dst.store(dst.gemm(w1[e], z2, y_buf, t), y[start:stop])
    return x_all, z_all, y


def _backward_pieces(
    g: torch.Tensor, x_all: torch.Tensor, z_all: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor,
    plan: TwoCorePlan, pieces: list[Piece], needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients (dx, dw0, dw1) of _forward_pieces for the output gradient g (rows, d_out); None where not needed."""
    src, dst = plan.sides
    b1, p1, _, c1 = plan.core1
    b2, _, k2, c2 = plan.core2
    need_x, need_w0, need_w1 = needs
    n, mid = g.shape[0], b1 * p1 * c1
    dx = g.new_empty(n, plan.d_in) if need_x else None
    dw0 = g.new_zeros(w0.shape) if need_w0 else None
    dw1 = g.new_zeros(w1.shape) if need_w1 else None
    rows = max((stop - start for _, start, stop in pieces), default=0)
    g_buf, z_buf, dz_buf, dzt_buf, dx_buf = (g.new_empty(size * rows) for size in (dst.size, mid, mid, mid, src.size))
    mid_moved = tuple(plan.mid_axes[i] for i in plan.mid_perm)
    mid_back = _inverse(plan.mid_perm)
    for e, start, stop in pieces:
        t = stop - start
        gt = dst.load(g[start:stop], g_buf[: dst.size * t])  # (b2, p2, c2 t); dropped (padding) outputs get 0
        zt = z_all[start * mid : stop * mid].view(b1, p1, c1 * t)
        if need_w1:
            z2 = _regroup(zt, plan.mid_axes, plan.mid_perm, (b2, k2, c2), t, z_buf)
            dw1[e].baddbmm_(gt, z2.transpose(1, 2))
        if need_x or need_w0:
            dz2 = torch.bmm(w1[e].transpose(1, 2), gt, out=dz_buf[: mid * t].view(b2, k2, c2 * t))
            dzt = _regroup(dz2, mid_moved, mid_back, (b1, p1, c1), t, dzt_buf)
            if need_w0:
                xt = src.view(x_all[start * src.size : stop * src.size], t)
                dw0[e].baddbmm_(dzt, xt.transpose(1, 2))
            if need_x:
                src.store(src.gemm(w0[e].transpose(1, 2), dzt, dx_buf, t), dx[start:stop])
    return dx, dw0, dw1


def _native_forward_pieces(
    x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, tm: TokenMajorPlan, pieces: list[Piece]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """_forward_pieces on the compiled offset GEMM (token_major.py): returns (x as read, z, y), no copies when
    the plan's input and output need no padding or reordering."""
    n = x.shape[0]
    x_in = x.contiguous() if tm.in_size == tm.d_in else _pad_features(x, tm.in_size)
    z_all = x.new_empty(n, tm.mid)
    ys = x.new_empty(n, tm.d_out if tm.direct else tm.out_size)
    for e, start, stop in pieces:
        rows = slice(start, stop)
        tm.forward(x_in[rows], w0[e], w1[e], z_all[rows], ys[rows], NATIVE_TILE_TOKENS)
    return x_in, z_all, ys if tm.direct else ys.index_select(1, tm.y_index)


def _native_backward_pieces(
    g: torch.Tensor, x_in: torch.Tensor, z_all: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor,
    tm: TokenMajorPlan, pieces: list[Piece], needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients (dx, dw0, dw1) of _native_forward_pieces; None where not needed. Weight gradients are summed
    from per-thread accumulators."""
    need_x, need_w0, need_w1 = needs
    n, threads = g.shape[0], torch.get_num_threads()
    (b1, p1, k1, _), (b2, p2, k2, _) = tm.core1, tm.core2
    gs = g.contiguous() if tm.direct else g.new_zeros(n, tm.out_size).index_copy_(1, tm.y_index, g)
    dw0 = g.new_zeros(w0.shape[0], threads, b1, p1, k1) if need_w0 else None
    dw1t = g.new_zeros(w1.shape[0], threads, b2, k2, p2) if need_w1 else None
    dx_in = g.new_empty(n, tm.in_size) if need_x else None
    for e, start, stop in pieces:
        rows = slice(start, stop)
        tm.backward(
            gs[rows], x_in[rows], z_all[rows], w0[e], w1[e], None if dx_in is None else dx_in[rows],
            None if dw0 is None else dw0[e], None if dw1t is None else dw1t[e], NATIVE_TILE_TOKENS,
        )
    dw0 = dw0.sum(1) if need_w0 else None
    dw1 = dw1t.sum(1).transpose(2, 3).contiguous() if need_w1 else None
    dx = dx_in if not need_x or tm.in_size == tm.d_in else dx_in[:, : tm.d_in].contiguous()
    return dx, dw0, dw1


def _native_usable(x: torch.Tensor) -> bool:
    """The compiled GEMM can take this call: x float32 on the CPU, the GEMM built and usable here
    (native.available), and no torch dispatch mode (FlopCounterMode) watching."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and native.available() and (
        _get_current_dispatch_mode() is None
    )


def _native_tables(plan: TwoCorePlan, x: torch.Tensor) -> TokenMajorPlan | None:
    """The offset-GEMM tables of plan when the compiled path runs it (_native_usable): at least
    NATIVE_MIN_ELEMENTS, the plan token-major-able, at most NATIVE_MAX_EXPANSION x wider in the middle, and
    every GEMM's column count (p1, k1, p2, k2) a multiple of NATIVE_COLUMN_MULTIPLE."""
    if not _native_usable(x) or x.shape[0] * max(plan.in_size, plan.out_size) < NATIVE_MIN_ELEMENTS:
        return None
    (b1, p1, k1, c1), (_, p2, k2, _) = plan.core1, plan.core2
    if b1 * p1 * c1 > NATIVE_MAX_EXPANSION * max(plan.in_size, plan.out_size):
        return None
    if any(size % NATIVE_COLUMN_MULTIPLE for size in (p1, k1, p2, k2)):
        return None
    return token_major_plan(plan)


def _schedule_forward(x, w0, w1, plan, tm, counts, chunk):
    """(pieces, x operand, z, y) on the compiled GEMM when tm is given (whole segments), else on bmm (chunks)."""
    if tm is None:
        pieces = _pieces(counts, chunk)
        return (pieces, *_forward_pieces(x, w0, w1, plan, pieces))
    pieces = _pieces(counts, max(1, sum(counts)))
    return (pieces, *_native_forward_pieces(x, w0, w1, tm, pieces))


def _schedule_backward(g, x_op, z_all, w0, w1, plan, tm, pieces, needs):
    """_schedule_forward's gradients (dx, dw0, dw1) on the same path."""
    if tm is None:
        return _backward_pieces(g, x_op, z_all, w0, w1, plan, pieces, needs)
    return _native_backward_pieces(g, x_op, z_all, w0, w1, tm, pieces, needs)


class _TwoCoreFunction(torch.autograd.Function):
    """Forward and backward of two_core_apply on chunks of tokens (module docstring); x is (N, d_in)."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan, chunk: int
    ) -> torch.Tensor:
        tm = _native_tables(plan, x)
        pieces, x_op, z_all, y = _schedule_forward(x, w0.unsqueeze(0), w1.unsqueeze(0), plan, tm, [x.shape[0]], chunk)
        ctx.save_for_backward(x_op, z_all, w0, w1)
        ctx.plan, ctx.tm, ctx.pieces = plan, tm, pieces
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        x_op, z_all, w0, w1 = ctx.saved_tensors
        dx, dw0, dw1 = _schedule_backward(
            g, x_op, z_all, w0.unsqueeze(0), w1.unsqueeze(0), ctx.plan, ctx.tm, ctx.pieces, ctx.needs_input_grad[:3]
        )
        return dx, None if dw0 is None else dw0[0], None if dw1 is None else dw1[0], None, None


class _RoutedTwoCoreFunction(torch.autograd.Function):
    """Mixture of two-core experts: y_n = sum_j gate_nj * expert_{e_nj}(x_n), only the routed experts computed.

    The N k (token, expert) slots come sorted by expert (`tokens`: the token of each slot; `counts`: slots per
    expert). Gathering the slots' inputs, gating the outputs and adding them back up are one pass each over the
    slots (index_select, a multiply, index_add), and each expert runs the two-core schedule on its contiguous
    segment. Backward: the gate gradient is <dy_n, expert output> per slot (a row-wise dot, no temporary).
    """

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, gates: torch.Tensor, plan: TwoCorePlan,
        tokens: torch.Tensor, counts: list[int], chunk: int,
    ) -> torch.Tensor:
        tm = _native_tables(plan, x)
        pieces, x_op, z_all, ys = _schedule_forward(x.index_select(0, tokens), w0, w1, plan, tm, counts, chunk)
        y = x.new_zeros(x.shape[0], plan.d_out).index_add_(0, tokens, ys * gates[:, None])
        ctx.save_for_backward(x_op, z_all, ys, w0, w1, gates, tokens)
        ctx.plan, ctx.tm, ctx.pieces, ctx.tokens_in = plan, tm, pieces, x.shape[0]
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: torch.Tensor):
        x_op, z_all, ys, w0, w1, gates, tokens = ctx.saved_tensors
        need_x, need_w0, need_w1, need_gates = ctx.needs_input_grad[:4]
        dys = dy.index_select(0, tokens)  # each slot's share of the output gradient
        dgates = torch.einsum("sd,sd->s", dys, ys) if need_gates else None
        dys.mul_(gates[:, None])
        dxs, dw0, dw1 = _schedule_backward(
            dys, x_op, z_all, w0, w1, ctx.plan, ctx.tm, ctx.pieces, (need_x, need_w0, need_w1)
        )
        dx = dxs.new_zeros(ctx.tokens_in, ctx.plan.d_in).index_add_(0, tokens, dxs) if need_x else None
        return dx, dw0, dw1, dgates, None, None, None, None


# --- entry points ------------------------------------------------------------------------------------------
def reference_apply(x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan) -> torch.Tensor:
    """The same map with plain differentiable ops on the whole batch: the fallback (other devices, fast=False)."""
    n = x.shape[0]
    b1, _, k1, c1 = plan.core1
    b2, _, k2, c2 = plan.core2
    xt = _pad_features(x, plan.in_size).view(n, *plan.in_axes).permute(*[1 + i for i in plan.in_perm], 0)
    zt = torch.matmul(w0, xt.reshape(b1, k1, c1 * n))
    yt = torch.matmul(w1, _regroup(zt, plan.mid_axes, plan.mid_perm, (b2, k2, c2), n))
    y = yt.reshape(*plan.out_axes, n).permute(len(plan.out_axes), *plan.out_perm).reshape(n, plan.out_size)
    return y[:, : plan.d_out]


def uses_fast_path(x: torch.Tensor) -> bool:
    """The fused Functions are tuned for (and tested on) CPU and run in one dtype; other devices, and CPU
    autocast (train.precision=bf16), take the plain reference path, whose matmuls autocast casts."""
    return x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")


def two_core_apply(
    x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan, fast: bool = True,
    chunk: int | None = None,
) -> torch.Tensor:
    """y = x W^T of a two-core structure; x (..., d_in) -> (..., d_out); w0 (b1, p1, k1), w1 (b2, p2, k2).

    fast=False, a non-CPU tensor, CPU autocast or a call below FUSED_MIN_ELEMENTS uses reference_apply, which
    supports double backward.
    """
    if x.shape[-1] != plan.d_in:
        raise ValueError(f"input has {x.shape[-1]} features, the layer expects d_in={plan.d_in}")
    chunk = plan.chunk_tokens() if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1 (tokens per chunk)")
    lead = x.shape[:-1]
    flat = x.reshape(-1, plan.d_in)
    if fast and uses_fast_path(flat) and flat.shape[0] * max(plan.in_size, plan.out_size) >= FUSED_MIN_ELEMENTS:
        y = _TwoCoreFunction.apply(flat, w0, w1, plan, chunk)
    else:
        y = reference_apply(flat, w0, w1, plan)
    return y.reshape(*lead, plan.d_out)


def routed_two_core_apply(
    x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan, experts: torch.Tensor,
    gates: torch.Tensor, chunk: int | None = None,
) -> torch.Tensor:
    """y_n = sum_j gates[n, j] * expert_{experts[n, j]}(x_n) with two-core experts, on CPU (uses_fast_path).

    x (N, d_in); w0 (E, b1, p1, k1) and w1 (E, b2, p2, k2) hold the experts' core views; experts (N, k) the routed
    expert ids, gates (N, k) their weights. Only the routed experts run (moe_ffn.mix_experts' slot order).
    """
    if x.dim() != 2 or x.shape[-1] != plan.d_in:
        raise ValueError(f"input has shape {tuple(x.shape)}, the experts expect (tokens, d_in={plan.d_in})")
    chunk = plan.chunk_tokens() if chunk is None else chunk
    flat = experts.reshape(-1)
    order = torch.argsort(flat, stable=True)
    tokens = order // experts.shape[-1]  # slot n k + j belongs to token n
    counts = torch.bincount(flat, minlength=w0.shape[0]).tolist()
    slot_gates = gates.reshape(-1)[order].to(x.dtype)
    return _RoutedTwoCoreFunction.apply(x, w0, w1, slot_gates, plan, tokens, counts, chunk)


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
    """Monarch P L P^T R: h[k] = R_k x[k]; g[l, r] = h[k, q] with k mid + q = r b + l; o[l] = L_l g[l];
    y[s b + l] = o[l, s]. The middle is h's features split as (r, l) and transposed (a strided view)."""
    return TwoCorePlan(
        d_in=d_in, d_out=d_out,
        in_axes=(blocks, in_blk), in_perm=(0, 1), core1=(blocks, mid, in_blk, 1),
        mid_axes=(mid, blocks), mid_perm=(1, 0), core2=(blocks, out_blk, mid, 1),
        out_axes=(blocks, out_blk), out_perm=(1, 0),
    )


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


# --- 2-core Tensor-Train (and Kronecker): token-major ------------------------------------------------------------
class _TensorTrain2Function(torch.autograd.Function):
    """Forward and backward of tt2_apply; x (N, n1 n2) contiguous, g0 (m1 r, n1), g1 (m2, r n2).

    Core 0 contracts the outer input axis: per token, z[n] = g0 @ x[n] with x[n] read in place as (n1, n2), one
    bmm over the chunk's tokens with g0 expanded (not copied). Core 1 contracts (s, i2): the rows (n, j1) of z are
    contiguous, so y = z (t m1, r n2) @ g1^T is one plain GEMM writing y token-major. The forward copies nothing;
    the backward copies twice per chunk, for dg0 = sum_n dz[n] x[n]^T as one GEMM over (n, i2) (once where the
    compiled GEMM of native.py reads dz in place).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, g0: torch.Tensor, g1: torch.Tensor, chunk: int) -> torch.Tensor:
        n, (mr, n1), (m2, rn2) = x.shape[0], g0.shape, g1.shape
        n2 = x.shape[1] // n1
        m1 = mr * n2 // rn2
        z_all = x.new_empty(n, mr, n2)  # core 0's output per token (m1, r, n2), saved for dg1
        y = x.new_empty(n, m1 * m2)
        for s in range(0, n, chunk):
            t = min(chunk, n - s)
            z = torch.bmm(g0.expand(t, mr, n1), x[s : s + t].view(t, n1, n2), out=z_all[s : s + t])
            torch.mm(z.view(t * m1, rn2), g1.t(), out=y[s : s + t].view(t * m1, m2))
        ctx.save_for_backward(x, z_all, g0, g1)
        ctx.chunk = chunk
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: torch.Tensor):
        x, z_all, g0, g1 = ctx.saved_tensors
        chunk: int = ctx.chunk
        need_x, need_g0, need_g1 = ctx.needs_input_grad[:3]
        n, (mr, n1), (m2, rn2) = x.shape[0], g0.shape, g1.shape
        n2 = x.shape[1] // n1
        m1 = mr * n2 // rn2
        dx = x.new_empty(n, n1 * n2) if need_x else None
        dg0 = g0.new_zeros(mr, n1) if need_g0 else None
        dg1 = g1.new_zeros(m2, rn2) if need_g1 else None
        rows = min(chunk, n)
        native_ok = need_g0 and _native_usable(x) and x.numel() >= NATIVE_MIN_ELEMENTS
        dz_buf, dz_moved, x_moved = (
            x.new_empty(rows * size) for size in (mr * n2, 0 if native_ok else mr * n2, n1 * n2)
        )
        for s in range(0, n, chunk):
            t = min(chunk, n - s)
            dy_c = dy[s : s + t].reshape(t * m1, m2)
            if need_g1:
                dg1.addmm_(dy_c.t(), z_all[s : s + t].view(t * m1, rn2))
            if not (need_x or need_g0):
                continue
            dz = torch.mm(dy_c, g1, out=dz_buf[: t * mr * n2].view(t * m1, rn2)).view(t, mr, n2)
            if need_x:
                torch.bmm(g0.t().expand(t, n1, mr), dz, out=dx[s : s + t].view(t, n1, n2))
            if need_g0:  # dg0[(j1, s), i1] = sum_{n, i2} dz[n, (j1, s), i2] x[n, i1, i2]
                x_t = x_moved[: t * n1 * n2].view(t, n2, n1)
                x_t.copy_(x[s : s + t].view(t, n1, n2).transpose(1, 2))
                if native_ok:  # reads dz in place: one copy (x) instead of two
                    _tt2_native_dg0(dz, x_t, dg0)
                else:
                    dz_t = dz_moved[: t * mr * n2].view(mr, t, n2)
                    dz_t.copy_(dz.transpose(0, 1))
                    dg0.addmm_(dz_t.view(mr, t * n2), x_t.view(t * n2, n1))
        return dx, dg0, dg1, None


def _tt2_native_dg0(dz: torch.Tensor, x_t: torch.Tensor, dg0: torch.Tensor) -> None:
    """dg0 (mr, n1) += sum over (token, i2) of dz[t, m, i2] x_t[t, i2, i1], on the compiled GEMM (dz in place)."""
    t, mr, n2 = dz.shape
    n1 = x_t.shape[2]
    steps, pairs, one = native.steps, native.pairs, native.steps(1, 0)
    native.gemm(native.Gemm(
        dz, one, steps(mr, n2), pairs(steps(t, mr * n2), steps(n2, 1)),
        x_t, one, pairs(steps(t, n1 * n2), steps(n2, n1)),
        dg0, one, steps(mr, n1), n1, accumulate=True,
    ))


def tt2_reference(x: torch.Tensor, core0: torch.Tensor, core1: torch.Tensor) -> torch.Tensor:
    """y[j1, j2] = sum_{i1, i2, s} x[i1, i2] G0[j1, s, 0, i1] G1[j2, 0, s, i2] as one einsum (the fallback)."""
    n1, n2 = core0.shape[3], core1.shape[3]
    y = torch.einsum("nab,jsa,ksb->njk", x.reshape(-1, n1, n2), core0[:, :, 0], core1[:, 0])
    return y.reshape(x.shape[0], -1)


def tt2_apply(
    x: torch.Tensor, core0: torch.Tensor, core1: torch.Tensor, fast: bool = True, chunk: int | None = None
) -> torch.Tensor:
    """y = x W^T for a 2-core TT (Kronecker at rank 1) with cores (m1, r, 1, n1), (m2, 1, r, n2); x (..., n1 n2).

    Core 0 first, as tt.TTLayout counts its FLOPs. fast=False (or a non-CPU tensor) uses tt2_reference.
    """
    (m1, r, _, n1), (m2, _, _, n2) = core0.shape, core1.shape
    if x.shape[-1] != n1 * n2:
        raise ValueError(f"input has {x.shape[-1]} features, the layer expects d_in={n1 * n2}")
    chunk = max(MIN_CHUNK_TOKENS, CHUNK_FLOATS // max(n1 * n2, m1 * m2)) if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1 (tokens per chunk)")
    lead = x.shape[:-1]
    flat = x.reshape(-1, n1 * n2)
    if fast and uses_fast_path(flat) and flat.shape[0] > 0:
        g0, g1 = core0.reshape(m1 * r, n1), core1.reshape(m2, r * n2)
        y = _TensorTrain2Function.apply(flat.contiguous(), g0, g1, chunk)
    else:
        y = tt2_reference(flat, core0, core1)
    return y.reshape(*lead, m1 * m2)
