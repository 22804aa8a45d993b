"""The bmm schedule of a two-core plan: token-major x -> two batched GEMMs on chunks of tokens -> token-major y.

Done the plain way (token-major bmm calls, permute + reshape between the cores, autograd for the backward) most of
the time goes into copies: the intermediate is materialised in every direction, and bmm reads blocks of a
(tokens, features) operand 4 KB apart, one 128-byte run at a time. Here forward and backward run by hand on chunks
of tokens, in the layouts MKL's small batched GEMMs run fastest on:

    per chunk of t tokens            (xt: (b1, k1, c1 t), zt: (b1, p1, c1 t), z2: (b2, k2, c2 t), yt: (b2, p2, c2 t))
    forward   xt = load(x)                 one copy: token-major x -> core 1's operand (zero-padded)
              zt = w0 @ xt                 bmm, w0: (b1, p1, k1), zt feature-major
              z2 = regroup(zt)             a view when the strides allow it (BTT, Monarch) and the GEMMs read it
                                           in place (float32), else a copy (then saved instead of zt)
              yt = w1 @ z2                 bmm, w1: (b2, p2, k2)
              y  = store(yt)               one copy back to token-major (truncated)
    backward  gt = load(g);  dw1 += gt z2^T;  dz2 = w1^T gt;  dzt = regroup^-1(dz2)
              dw0 += dzt xt^T;  dxt = w0^T dzt;  dx = store(dxt)                     (4 GEMMs, 2-3 copies)

The ends (`Side`) keep a block-diagonal core's operand token-major as (b, t, k) blocks ("rows": a copy of k-float
runs, 3x cheaper here than the element-wise 2-D transpose a feature-major operand needs), and the GEMM reads or
writes it transposed. Axes a core does not touch are carried as extra GEMM columns (c1, c2), and a weight shared
across a core's batch is an expanded (stride-0) view, which bmm reads in place. xt and zt are saved for the backward.

bf16 GEMMs run on oneDNN, which reads only batch_dense operands in place and copies any other first, one element at
a time when the batch axis is not the outermost (15 ms for the 8 MB middle of BTT at d = 1024, 4,096 tokens, on 2
AMX cores, against 0.4 ms for a blocked copy). So in bf16 every operand handed to bmm is batch_dense: the middle is
regrouped by a copy, and the forward saves that copy (z2), which the weight gradient of core 2 reads, in place of zt.
`reference_apply` is the same map with plain differentiable ops on the whole batch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scaling.structures.fastpath.two_core import TwoCorePlan, inverse

def pad_features(x: torch.Tensor, size: int) -> torch.Tensor:
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


def batch_dense(m: torch.Tensor) -> bool:
    """m (B, r, c) holds each batch entry as one dense r x c block, row- or column-major, the blocks r c apart: the
    only layouts oneDNN's bf16 batched GEMM reads in place (module docstring)."""
    size_b, rows, cols = m.shape
    if size_b > 1 and m.stride(0) != rows * cols:
        return False
    return (m.stride(2) == 1 or cols == 1) and (m.stride(1) == cols or rows == 1) or (
        (m.stride(1) == 1 or rows == 1) and (m.stride(2) == rows or cols == 1)
    )


def strided_gemms(dtype: torch.dtype) -> bool:
    """torch's CPU batched GEMM reads strided operands in place in this dtype (MKL, float32 / float64); bf16 runs on
    oneDNN, which copies all but batch_dense operands."""
    return dtype in (torch.float32, torch.float64)


def readable_view(
    z: torch.Tensor, axes: tuple[int, ...], perm: tuple[int, ...], shape: tuple[int, int, int], t: int
) -> torch.Tensor | None:
    """z's features reordered by perm as a (shape[0], shape[1], shape[2] t) view that the GEMMs can read in place
    (strided_gemms, else batch_dense), or None when the strides do not allow one."""
    view = _as_view(_moved(z, axes, perm, t), (shape[0], shape[1], shape[2] * t))
    return view if view is not None and (strided_gemms(z.dtype) or batch_dense(view)) else None


def regroup(
    z: torch.Tensor, axes: tuple[int, ...], perm: tuple[int, ...], shape: tuple[int, int, int], t: int,
    buf: torch.Tensor | None = None, copy: bool = False,
) -> torch.Tensor:
    """z's features reordered by perm, as (shape[0], shape[1], shape[2] t): the readable_view when there is one (BTT,
    Monarch, TT forward) and copy is off, else a copy into buf (a new tensor without one)."""
    view = None if copy else readable_view(z, axes, perm, shape, t)
    if view is not None:
        return view
    moved = _moved(z, axes, perm, t)
    target = (shape[0], shape[1], shape[2] * t)
    if buf is None:
        return moved.reshape(target)
    out = buf[: moved.numel()].view(moved.shape)
    out.copy_(moved)
    return out.view(target)


@functools.cache
def mid_copied(plan: TwoCorePlan, dtype: torch.dtype) -> bool:
    """Whether core 2's operand is a copy of core 1's output in this dtype (no readable_view of it); then the
    forward saves that copy for the weight gradient, rather than core 1's output for the backward to copy again."""
    b1, p1, _, c1 = plan.core1
    b2, _, k2, c2 = plan.core2
    z = torch.empty(b1 * p1 * c1 * 2, dtype=dtype, device="meta")
    return readable_view(z, plan.mid_axes, plan.mid_perm, (b2, k2, c2), 2) is None


@dataclass(frozen=True)
class Side:
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
        x = pad_features(x, self.size)
        if self.interleaved:
            buf.view(self.b, t * self.k).copy_(x.reshape(t * self.k, self.b).t())
        elif self.rows:
            buf.view(self.b, t, self.k).copy_(x.view(t, self.b, self.k).transpose(0, 1))
        elif self.in_order and x.is_contiguous():
            buf.view(-1, t).copy_(x.t())  # a plain 2-D transpose: torch copies it in cache-sized blocks
        else:
            token_axes = [self.axes[i] for i in self.to_tokens]
            src = x.view(t, *token_axes).permute(*[1 + j for j in inverse(self.to_tokens)], 0)
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


@functools.cache
def sides(plan: TwoCorePlan) -> tuple[Side, Side]:
    """The input end (x -> core 1's operand) and the output end (core 2's result -> y) of plan."""
    b1, _, k1, c1 = plan.core1
    b2, p2, _, c2 = plan.core2
    src = Side(tuple(plan.in_axes[i] for i in plan.in_perm), inverse(plan.in_perm), b1, k1, c1, plan.d_in)
    dst = Side(plan.out_axes, plan.out_perm, b2, p2, c2, plan.d_out)
    return src, dst


# Rows of x are processed in pieces (expert, start, stop): chunks of the batch, or of each expert's segment of the
# routed slots. Weights carry a leading expert axis (size 1 for a plain layer). Every per-piece result goes into a
# buffer allocated once per call: on these machines fresh large allocations cost page faults comparable to the
# copies themselves.
Piece = tuple[int, int, int]


def row_pieces(counts: list[int], chunk: int) -> list[Piece]:
    """(expert, start, stop) row ranges: each expert's consecutive segment of `counts[e]` rows, cut into chunks."""
    pieces, start = [], 0
    for expert, count in enumerate(counts):
        pieces += [(expert, s, min(s + chunk, start + count)) for s in range(start, start + count, chunk)]
        start += count
    return pieces


def forward_pieces(
    x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan, pieces: list[Piece]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y = x W_e^T row range by row range; x (rows, d_in), w0 (E, b1, p1, k1), w1 (E, b2, p2, k2).

    Returns (x_all, z_all, y): core 1's operands piece after piece, and core 1's outputs (or, where mid_copied,
    core 2's operands) the same way, both saved for the backward; and y.
    """
    src, dst = sides(plan)
    b1, p1, _, c1 = plan.core1
    b2, _, k2, c2 = plan.core2
    n, mid = x.shape[0], b1 * p1 * c1
    x_all, z_all = x.new_empty(n * src.size), x.new_empty(n * mid)
    y = x.new_empty(n, plan.d_out)
    rows = max((stop - start for _, start, stop in pieces), default=0)
    y_buf, z_buf = x.new_empty(dst.size * rows), x.new_empty(mid * rows)
    copied = mid_copied(plan, x.dtype)
    for e, start, stop in pieces:
        t = stop - start
        xt = src.load(x[start:stop], x_all[start * src.size : stop * src.size])
        saved = z_all[start * mid : stop * mid]
        zt = torch.bmm(w0[e], xt, out=(z_buf[: mid * t] if copied else saved).view(b1, p1, c1 * t))
        z2 = regroup(zt, plan.mid_axes, plan.mid_perm, (b2, k2, c2), t, saved if copied else z_buf, copy=copied)
        dst.store(dst.gemm(w1[e], z2, y_buf, t), y[start:stop])
    return x_all, z_all, y


def backward_pieces(
    g: torch.Tensor, x_all: torch.Tensor, z_all: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor,
    plan: TwoCorePlan, pieces: list[Piece], needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients (dx, dw0, dw1) of forward_pieces for the output gradient g (rows, d_out); None where not needed."""
    src, dst = sides(plan)
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
    mid_back = inverse(plan.mid_perm)
    copied = mid_copied(plan, g.dtype)
    for e, start, stop in pieces:
        t = stop - start
        gt = dst.load(g[start:stop], g_buf[: dst.size * t])  # (b2, p2, c2 t); dropped (padding) outputs get 0
        saved = z_all[start * mid : stop * mid]
        if need_w1:
            if copied:
                z2 = saved.view(b2, k2, c2 * t)
            else:
                z2 = regroup(saved.view(b1, p1, c1 * t), plan.mid_axes, plan.mid_perm, (b2, k2, c2), t, z_buf)
            dw1[e].baddbmm_(gt, z2.transpose(1, 2))
        if need_x or need_w0:
            dz2 = torch.bmm(w1[e].transpose(1, 2), gt, out=dz_buf[: mid * t].view(b2, k2, c2 * t))
            dzt = regroup(dz2, mid_moved, mid_back, (b1, p1, c1), t, dzt_buf)
            if need_w0:
                xt = src.view(x_all[start * src.size : stop * src.size], t)
                dw0[e].baddbmm_(dzt, xt.transpose(1, 2))
            if need_x:
                src.store(src.gemm(w0[e].transpose(1, 2), dzt, dx_buf, t), dx[start:stop])
    return dx, dw0, dw1


def reference_apply(x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan) -> torch.Tensor:
    """The same map with plain differentiable ops on the whole batch: paths.Path.REFERENCE."""
    n = x.shape[0]
    b1, _, k1, c1 = plan.core1
    b2, _, k2, c2 = plan.core2
    xt = pad_features(x, plan.in_size).view(n, *plan.in_axes).permute(*[1 + i for i in plan.in_perm], 0)
    zt = torch.matmul(w0, xt.reshape(b1, k1, c1 * n))
    yt = torch.matmul(w1, regroup(zt, plan.mid_axes, plan.mid_perm, (b2, k2, c2), n))
    y = yt.reshape(*plan.out_axes, n).permute(len(plan.out_axes), *plan.out_perm).reshape(n, plan.out_size)
    return y[:, : plan.d_out]

