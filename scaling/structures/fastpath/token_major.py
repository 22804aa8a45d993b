"""Two-core structures on token-major activations through the native offset GEMM (native.py): no transposes.

A TwoCorePlan (two_core.py) says how x (t, d_in) -> y (t, d_out) splits into two batched GEMMs with a feature
permutation between them. The PyTorch path copies activations into the layouts bmm accepts; the offset GEMM
reads any permutation of its A operand's axes in place, so here every GEMM reads and writes token-major rows:

    forward   z[t, (b1, c1, p1)]  = x[t, (b1, k1, c1)] . w0[b1]^T             per (b1, c1) entry
              ys[t, (b2, c2, p2)] = z[t, (b2, k2, c2) reordered] . w1[b2]^T    per (b2, c2) entry
    backward  dw1[b2]^T = z^T g,  dz[t, (b2, c2, k2)] = g . w1[b2],  dw0[b1] = dz^T x,  dx = dz . w0[b1]

with w0 (b1, p1, k1), w1 (b2, p2, k2) as in two_core.py. The GEMMs of the forward (and of the backward) run as
one `native.chain`, tile of tokens after tile, and z and dz live only in a per-thread scratch of one tile's rows
(native.tile_steps): they never reach memory, and the backward recomputes z (core 1 again, 1/6 more FLOPs) rather
than read a saved copy. A step then moves x, y, dy and dx (and x again) and nothing else: BTT at d = 1024 moved
~130 MB per fwd+bwd with z saved and dz stored, ~80 MB this way. Weight gradients add into per-thread
accumulators. Carried axes (c) are extra batch entries, or extra terms where a weight gradient sums over them.

x is read in place when d_in fills the plan's input axes (else zero-padded once), and ys is y itself when the
output needs no reordering or truncation (`direct`: BTT, Einsum at the structured points); else y is one strided
copy of it (Monarch, whose output shuffle interleaves the blocks' outputs: a transpose, 2.2x faster than gathering
the columns through an index at d = 1024), and the gradient one copy back. The GEMMs that write dx and read x for
dw0 need core 1's contracted axis innermost in x; `token_major_plan` returns None for plans without it, which stay
on the PyTorch path, as do plans whose regrouping between the cores (or its inverse, for dz) cuts across axes
(Monarch whose block count does not divide its middle block size).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scaling.structures.fastpath import native
from scaling.structures.fastpath.native import Offsets, offsets, pairs, steps
from scaling.structures.fastpath.two_core import TwoCorePlan

_LONG = torch.int64


class _NotSeparable(Exception):
    """An operand whose (b, k, c) split cuts across the plan's axes (Monarch whose blocks do not divide mid)."""


def _split(table: torch.Tensor) -> tuple[Offsets, Offsets, Offsets]:
    """A (b, k, c) offset table as three per-axis tables whose sums give it back (when b, k, c follow axes)."""
    b, k, c = table[:, 0, 0], table[0, :, 0], table[0, 0, :]
    if not torch.equal(table, b[:, None, None] + k[None, :, None] + c[None, None, :]):
        raise _NotSeparable
    return offsets(b), offsets(k), offsets(c)


def _stored_as(b: int, c: int, inner: int) -> torch.Tensor:
    """Positions of (b, inner, c) elements in storage ordered (b, c, inner): a (b, inner, c) table."""
    return torch.arange(b * c * inner, dtype=_LONG).view(b, c, inner).permute(0, 2, 1)


@dataclass(frozen=True, eq=False)
class TokenMajorPlan:
    """Offset tables of one TwoCorePlan on token-major rows (module docstring). Build with token_major_plan."""

    core1: tuple[int, int, int, int]  # (b1, p1, k1, c1)
    core2: tuple[int, int, int, int]  # (b2, p2, k2, c2)
    d_in: int
    in_size: int  # x's row length as read (d_in, or padded)
    mid_stride: int  # row length of z and dz as stored: the b1 p1 c1 middle features padded (padded_row)
    d_out: int
    out_size: int
    x_b: Offsets  # core 1's operand within an x row, per b1 and per c1 (k1 is innermost)
    x_c: Offsets
    z_b: Offsets  # core 2's operand within a z row (stored (b1, c1, p1)), per b2 / k2 / c2
    z_k: Offsets
    z_c: Offsets
    dz_b: Offsets  # core 1's output within a dz row (stored (b2, c2, k2)), per b1 / p1 / c1
    dz_p: Offsets
    dz_c: Offsets
    out_axes: tuple[int, ...]  # the plan's output split (TwoCorePlan.out_axes, out_perm)
    out_perm: tuple[int, ...]
    direct: bool  # output_rows is the identity: core 2 writes y itself

    def output_rows(self, ys: torch.Tensor) -> torch.Tensor:
        """y (t, d_out) from stored output rows ys (t, out_size, ordered (b2, c2, p2)): one strided copy."""
        (b2, p2, _, c2), t = self.core2, ys.shape[0]
        plan_order = ys.view(t, b2, c2, p2).transpose(2, 3).reshape(t, *self.out_axes)
        y = plan_order.permute(0, *(1 + a for a in self.out_perm)).reshape(t, self.out_size)
        return y[:, : self.d_out].contiguous()

    def stored_rows(self, g: torch.Tensor) -> torch.Tensor:
        """output_rows' adjoint: g (t, d_out) as stored output rows (t, out_size), zero where y is truncated."""
        (b2, p2, _, c2), t = self.core2, g.shape[0]
        padded = g if self.out_size == self.d_out else F.pad(g, (0, self.out_size - self.d_out))
        permuted_axes = [self.out_axes[a] for a in self.out_perm]
        inverse = sorted(range(len(self.out_perm)), key=self.out_perm.__getitem__)
        plan_order = padded.view(t, *permuted_axes).permute(0, *(1 + a for a in inverse))
        return plan_order.reshape(t, b2, p2, c2).transpose(2, 3).reshape(t, self.out_size).contiguous()

    def scratch(self, like: torch.Tensor, tile: int) -> torch.Tensor:
        """A per-thread tile of middle rows (z or dz): (threads, tile, mid_stride), like's dtype and device."""
        return like.new_empty(torch.get_num_threads(), tile, self.mid_stride)

    def forward_ops(
        self, x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, z: torch.Tensor, ys: torch.Tensor, tile: int
    ) -> list[native.Gemm]:
        """The forward's two GEMMs, core 1 into the scratch z and core 2: ys (stored output rows) from x (t, in_size);
        w0 (b1, p1, k1), w1 (b2, p2, k2). One native.chain runs them (or each alone, to time it)."""
        return [self._core1(x, w0, z, tile), self._core2(z, w1, ys, tile)]

    def _core1(self, x: torch.Tensor, w0: torch.Tensor, z: torch.Tensor, tile: int) -> native.Gemm:
        (b1, p1, k1, c1), t = self.core1, x.shape[0]
        return native.Gemm(
            x, pairs(self.x_b, self.x_c), steps(t, self.in_size), steps(k1, 1),
            w0.transpose(1, 2).contiguous(), pairs(steps(b1, k1 * p1), steps(c1, 0)), steps(k1, p1),
            z, steps(b1 * c1, p1), native.tile_steps(t, tile, self.mid_stride), p1, private=True,
        )

    def _core2(self, z: torch.Tensor, w1: torch.Tensor, ys: torch.Tensor, tile: int) -> native.Gemm:
        (b2, p2, k2, c2), t = self.core2, ys.shape[0]
        return native.Gemm(
            z, pairs(self.z_b, self.z_c), native.tile_steps(t, tile, self.mid_stride), self.z_k,
            w1.transpose(1, 2).contiguous(), pairs(steps(b2, k2 * p2), steps(c2, 0)), steps(k2, p2),
            ys, steps(b2 * c2, p2), steps(t, ys.shape[1]), p2, private_a=True,
        )

    def backward_ops(
        self, g: torch.Tensor, x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor,
        dx: torch.Tensor | None, dw0: torch.Tensor | None, dw1t: torch.Tensor | None,
        z: torch.Tensor, dz: torch.Tensor, tile: int,
    ) -> list[native.Gemm]:
        """The backward's GEMMs in order (core 1 recomputing z and dw1, dz, dw0, dx; those needed), z and dz the
        per-thread scratch tiles (`scratch`): dx (t, in_size) = dL/dx; dw0 (threads, b1, p1, k1) and dw1t
        (threads, b2, k2, p2) += per-thread parts of dL/dw0 and dL/dw1^T. g holds stored output rows; None skips
        a gradient. One native.chain runs them."""
        (b1, p1, k1, c1), (b2, p2, k2, c2) = self.core1, self.core2
        t = g.shape[0]
        rows = native.tile_steps(t, tile, self.mid_stride)
        ops = []
        if dw1t is not None:
            ops.append(self._core1(x, w0, z, tile))
            ops.append(native.Gemm(
                z, self.z_b, self.z_k, pairs(rows, self.z_c),
                g, steps(b2, c2 * p2), pairs(steps(t, g.shape[1]), steps(c2, p2)),
                dw1t, steps(b2, k2 * p2), steps(k2, p2), p2, terms_per_token=c2, private=True, private_a=True,
            ))
        if dx is not None or dw0 is not None:  # dz stored (b2, c2, k2)
            ops.append(native.Gemm(
                g, steps(b2 * c2, p2), steps(t, g.shape[1]), steps(p2, 1),
                w1.contiguous(), pairs(steps(b2, p2 * k2), steps(c2, 0)), steps(p2, k2),
                dz, steps(b2 * c2, k2), rows, k2, private=True,
            ))
            if dw0 is not None:
                ops.append(native.Gemm(
                    dz, self.dz_b, self.dz_p, pairs(rows, self.dz_c),
                    x, self.x_b, pairs(steps(t, self.in_size), self.x_c),
                    dw0, steps(b1, p1 * k1), steps(p1, k1), k1, terms_per_token=c1, private=True, private_a=True,
                ))
            if dx is not None:
                ops.append(native.Gemm(
                    dz, pairs(self.dz_b, self.dz_c), rows, self.dz_p,
                    w0.contiguous(), pairs(steps(b1, p1 * k1), steps(c1, 0)), steps(p1, k1),
                    dx, pairs(self.x_b, self.x_c), steps(t, self.in_size), k1, private_a=True,
                ))
        return ops


def padded_row(floats: int) -> int:
    """A row length (floats) of an odd number of 64-byte cache lines, at least `floats`. Rows 2^k bytes apart put a
    tile's rows in a few cache sets: fwd+bwd of BTT at d = 1024 (z rows of 4 KB) measured 1.15x faster with z and dz
    rows of 65-67 lines."""
    lines = -(-floats // 16)
    return 16 * (lines if lines % 2 else lines + 1)


@functools.cache
def token_major_plan(plan: TwoCorePlan) -> TokenMajorPlan | None:
    """The offset tables of a TwoCorePlan, or None when it has none (module docstring)."""
    try:
        return _tables(plan)
    except _NotSeparable:
        return None


def _tables(plan: TwoCorePlan) -> TokenMajorPlan | None:
    (b1, p1, k1, c1), (b2, p2, k2, c2) = plan.core1, plan.core2
    in_table = torch.arange(plan.in_size, dtype=_LONG).view(plan.in_axes).permute(plan.in_perm)
    x_b, x_k, x_c = _split(in_table.reshape(b1, k1, c1))
    if not torch.equal(x_k.table, torch.arange(k1)):
        return None
    # the plan orders the middle features as (b1, p1, c1) row-major; z stores them (b1, c1, p1)
    z_table = _stored_as(b1, c1, p1).reshape(plan.mid_axes).permute(plan.mid_perm).reshape(b2, k2, c2)
    z_b, z_k, z_c = _split(z_table)
    # dz stores core 2's operand (b2, c2, k2); find where each middle feature (b1, p1, c1) of the plan went
    mid = b1 * p1 * c1
    mid_of_operand = torch.arange(mid, dtype=_LONG).view(plan.mid_axes).permute(plan.mid_perm)
    dz_of_mid = torch.empty(mid, dtype=_LONG)
    dz_of_mid[mid_of_operand.reshape(-1)] = _stored_as(b2, c2, k2).reshape(-1)
    dz_b, dz_p, dz_c = _split(dz_of_mid.view(b1, p1, c1))
    y_index = _stored_as(b2, c2, p2).reshape(plan.out_axes).permute(plan.out_perm).reshape(-1)[: plan.d_out]
    direct = plan.out_size == plan.d_out and torch.equal(y_index, torch.arange(plan.d_out))
    return TokenMajorPlan(
        core1=plan.core1, core2=plan.core2, d_in=plan.d_in, in_size=plan.in_size, mid_stride=padded_row(mid),
        d_out=plan.d_out, out_size=plan.out_size, x_b=x_b, x_c=x_c, z_b=z_b, z_k=z_k, z_c=z_c,
        dz_b=dz_b, dz_p=dz_p, dz_c=dz_c, out_axes=plan.out_axes, out_perm=plan.out_perm, direct=direct,
    )


def native_forward_pieces(
    x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, tm: TokenMajorPlan, pieces: list[tuple[int, int, int]],
    tile: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """bmm_schedule.forward_pieces on the native offset GEMM, `tile` tokens at a time: returns (x as read, y), no
    copies when the plan's input and output need no padding or reordering (z is not kept: the backward
    recomputes it)."""
    n = x.shape[0]
    x_in = x.contiguous() if tm.in_size == tm.d_in else F.pad(x, (0, tm.in_size - x.shape[-1]))
    ys = x.new_empty(n, tm.d_out if tm.direct else tm.out_size)
    z = tm.scratch(x, tile)
    for e, start, stop in pieces:
        rows = slice(start, stop)
        native.chain(tm.forward_ops(x_in[rows], w0[e], w1[e], z, ys[rows], tile), stop - start, tile)
    return x_in, ys if tm.direct else tm.output_rows(ys)


def native_backward_pieces(
    g: torch.Tensor, x_in: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor,
    tm: TokenMajorPlan, pieces: list[tuple[int, int, int]], tile: int, needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients (dx, dw0, dw1) of native_forward_pieces; None where not needed. Weight gradients are summed
    from per-thread accumulators."""
    need_x, need_w0, need_w1 = needs
    n, threads = g.shape[0], torch.get_num_threads()
    (b1, p1, k1, _), (b2, p2, k2, _) = tm.core1, tm.core2
    gs = g.contiguous() if tm.direct else tm.stored_rows(g)
    dw0 = g.new_zeros(w0.shape[0], threads, b1, p1, k1) if need_w0 else None
    dw1t = g.new_zeros(w1.shape[0], threads, b2, k2, p2) if need_w1 else None
    dx_in = g.new_empty(n, tm.in_size) if need_x else None
    z, dz = tm.scratch(g, tile), tm.scratch(g, tile)
    for e, start, stop in pieces:
        rows = slice(start, stop)
        ops = tm.backward_ops(
            gs[rows], x_in[rows], w0[e], w1[e], None if dx_in is None else dx_in[rows],
            None if dw0 is None else dw0[e], None if dw1t is None else dw1t[e], z, dz, tile,
        )
        native.chain(ops, stop - start, tile)
    dw0 = dw0.sum(1) if need_w0 else None
    dw1 = dw1t.sum(1).transpose(2, 3).contiguous() if need_w1 else None
    dx = dx_in if not need_x or tm.in_size == tm.d_in else dx_in[:, : tm.d_in].contiguous()
    return dx, dw0, dw1

