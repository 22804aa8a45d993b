"""Triton kernels for a two-core plan (BTT, Monarch) on CUDA: paths.Path.TRITON. Imports triton: import it only
once paths.triton_available() says so.

Every GEMM of the layer is one block-diagonal GEMM on token-major activations whose columns are gathered and
scattered through index tables built from the plan (`_Tables`, -1 for padding), so no permute, pad or copy runs
outside the kernels. Per core block j and tile of BLOCK_T tokens, `_tile_gemm` loads A's columns a_cols[j] as a
(BLOCK_T, K) tile, multiplies it by block j's weight (P, K)^T with tl.dot (fp32 accumulation) and stores the
(BLOCK_T, P) result at out_cols[j], rounded to the output's dtype (the operands' dtype: bf16 under autocast).

    forward   z[:, i p1 + p] = x[:, in_cols[i]] @ w0[i]^T           core 1, block i
              y[:, out_cols[j]] = z[:, mid_cols[j]] @ w1[j]^T        core 2, block j (mid_cols: the permutation)
    backward  dz[:, mid_cols[j]] = g[:, out_cols[j]] @ w1[j];   dw1[j] = sum_t g[:, out_cols[j]]^T z[:, mid_cols[j]]
              dx[:, in_cols[i]] = dz[:, i p1 + p] @ w0[i];      dw0[i] = sum_t dz[:, i p1 + p]^T x[:, in_cols[i]]

The forward runs both cores in one kernel per token tile (`_fused_forward`) when the tile's intermediate
(BLOCK_T x mid values) is at most FUSED_TILE_BYTES: core 1 writes z (saved for the backward anyway), a CTA barrier,
and core 2 reads it back from L1/L2 instead of from HBM; wider middles run two `_block_gemm` launches. The
backward is two `_block_gemm` launches (core 2 then core 1), each program owning one core block and one split of
the token tiles: its weight gradient accumulates in registers over its tiles and is written once per split, and
the splits are summed in fp32 (deterministic: no atomics). Fusing the backward's cores too would move the weight
gradients' read-modify-write per tile instead, about as many bytes as the dz round trip it saves.

The kernels call Triton builtins only, none of triton.language's own @jit helpers (tl.cdiv, tl.zeros, tl.sum):
those are decorated when triton is first imported, so under the CPU interpreter (TRITON_INTERPRET=1, the tests)
they would be compiled-mode functions wherever triton was imported before the variable was set.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from scaling.structures.fastpath.paths import operand_dtype
from scaling.structures.fastpath.two_core import TwoCorePlan

BLOCK_T = 64  # tokens per tile (tl.dot needs at least 16 rows)
FUSED_TILE_BYTES = 64 * 1024  # a token tile's intermediate up to this size: one fused forward kernel
SPLIT_PROGRAMS = 1024  # backward: about this many programs (core blocks x token splits) per launch


@triton.jit
def _tile_gemm(a_ptr, a_stride, a_cols, w_ptr, w_sp, w_sk, o_ptr, o_stride, o_cols, rows, row_ok, K, P,
               BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr, PRECISION: tl.constexpr):
    """o[rows, o_cols[:P]] = a[rows, a_cols[:K]] @ w^T (w: P x K, strides w_sp, w_sk); returns the A tile."""
    k = tl.arange(0, BLOCK_K)
    p = tl.arange(0, BLOCK_P)
    a_col = tl.load(a_cols + k, mask=k < K, other=-1)
    a = tl.load(a_ptr + rows[:, None] * a_stride + a_col[None, :], mask=row_ok[:, None] & (a_col >= 0)[None, :],
                other=0.0)
    wt = tl.load(w_ptr + k[:, None] * w_sk + p[None, :] * w_sp, mask=(k < K)[:, None] & (p < P)[None, :], other=0.0)
    acc = tl.dot(a, wt, input_precision=PRECISION)
    o_col = tl.load(o_cols + p, mask=p < P, other=-1)
    tl.store(o_ptr + rows[:, None] * o_stride + o_col[None, :], acc.to(o_ptr.dtype.element_ty),
             mask=row_ok[:, None] & (o_col >= 0)[None, :])
    return a


@triton.jit
def _block_gemm(a_ptr, a_stride, a_cols, w_ptr, w_sb, w_sp, w_sk, o_ptr, o_stride, o_cols,
                b_ptr, b_stride, b_cols, dw_ptr, n_tokens, n_tiles, n_blocks, K, P, Q,
                HAS_OUT: tl.constexpr, HAS_DW: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
                BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, PRECISION: tl.constexpr):
    """Program (split s, block j), over token tiles s, s + splits, ...: o[:, o_cols[j]] = a[:, a_cols[j]] @ w[j]^T
    (HAS_OUT) and dw[s, j] = sum over the tiles of a[:, a_cols[j]]^T b[:, b_cols[j]] (HAS_DW, K x Q, fp32)."""
    split, j = tl.program_id(0), tl.program_id(1)
    splits = tl.num_programs(0)
    k = tl.arange(0, BLOCK_K)
    q = tl.arange(0, BLOCK_Q)
    acc = tl.full((BLOCK_K, BLOCK_Q), 0.0, tl.float32)
    tile = split
    while tile < n_tiles:  # a while loop: the interpreter cannot range() over runtime scalars
        rows = (tile * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
        row_ok = rows < n_tokens
        if HAS_OUT:
            a = _tile_gemm(a_ptr, a_stride, a_cols + j * K, w_ptr + j * w_sb, w_sp, w_sk, o_ptr, o_stride,
                           o_cols + j * P, rows, row_ok, K, P, BLOCK_K, BLOCK_P, PRECISION)
        else:
            a_col = tl.load(a_cols + j * K + k, mask=k < K, other=-1)
            a = tl.load(a_ptr + rows[:, None] * a_stride + a_col[None, :],
                        mask=row_ok[:, None] & (a_col >= 0)[None, :], other=0.0)
        if HAS_DW:
            b_col = tl.load(b_cols + j * Q + q, mask=q < Q, other=-1)
            b = tl.load(b_ptr + rows[:, None] * b_stride + b_col[None, :],
                        mask=row_ok[:, None] & (b_col >= 0)[None, :], other=0.0)
            acc += tl.dot(tl.trans(a), b, input_precision=PRECISION)
        tile += splits
    if HAS_DW:
        out = dw_ptr + ((split * n_blocks + j) * K + k[:, None]) * Q + q[None, :]
        tl.store(out, acc, mask=(k < K)[:, None] & (q < Q)[None, :])


@triton.jit
def _fused_forward(x_ptr, x_stride, in_cols, w0_ptr, w0_sb, w0_sp, w0_sk, z_ptr, z_cols,
                   w1_ptr, w1_sb, w1_sp, w1_sk, mid_cols, y_ptr, y_stride, out_cols, n_tokens,
                   B1: tl.constexpr, K1, P1, B2: tl.constexpr, K2, P2, BLOCK_T: tl.constexpr,
                   BLOCK_K1: tl.constexpr, BLOCK_P1: tl.constexpr, BLOCK_K2: tl.constexpr, BLOCK_P2: tl.constexpr,
                   PRECISION: tl.constexpr):
    """One token tile through both cores: every core-1 block into z, a barrier, every core-2 block from z. The
    block counts are constexpr (plan constants; the interpreter cannot range() over runtime scalars)."""
    rows = (tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
    row_ok = rows < n_tokens
    mid = B1 * P1
    for i in range(B1):
        _tile_gemm(x_ptr, x_stride, in_cols + i * K1, w0_ptr + i * w0_sb, w0_sp, w0_sk, z_ptr, mid,
                   z_cols + i * P1, rows, row_ok, K1, P1, BLOCK_K1, BLOCK_P1, PRECISION)
    tl.debug_barrier()  # the tile's z, written by all of this CTA's threads, is visible to all of them
    for j in range(B2):
        _tile_gemm(z_ptr, mid, mid_cols + j * K2, w1_ptr + j * w1_sb, w1_sp, w1_sk, y_ptr, y_stride,
                   out_cols + j * P2, rows, row_ok, K2, P2, BLOCK_K2, BLOCK_P2, PRECISION)


def _table(index: torch.Tensor, valid: int, blocks: int) -> torch.Tensor:
    """index (any shape) as int32 (blocks, width) with entries >= valid (padding) set to -1."""
    return torch.where(index < valid, index, -1).reshape(blocks, -1).to(torch.int32).contiguous()


@dataclass(frozen=True)
class _Tables:
    """Column tables of a plan with c1 = c2 = 1 (paths.triton_supports): block by block, the token-major column
    each GEMM operand element comes from or goes to (-1: zero padding in, dropped out)."""

    in_cols: torch.Tensor  # (b1, k1): x's column of core 1's input k of block i
    z_cols: torch.Tensor  # (b1, p1): z's column of core 1's output p of block i, i p1 + p
    mid_cols: torch.Tensor  # (b2, k2): z's column of core 2's input k of block j
    out_cols: torch.Tensor  # (b2, p2): y's column of core 2's output p of block j

    @classmethod
    def of(cls, plan: TwoCorePlan) -> _Tables:
        b1, b2 = plan.core1[0], plan.core2[0]
        inputs = torch.arange(plan.in_size).view(plan.in_axes).permute(plan.in_perm)
        middle = torch.arange(plan.mid_size)
        moved = middle.view(plan.mid_axes).permute(plan.mid_perm)
        out_order = [plan.out_axes[a] for a in plan.out_perm]
        back = [plan.out_perm.index(a) for a in range(len(plan.out_axes))]
        outputs = torch.arange(plan.out_size).view(out_order).permute(back)
        return cls(_table(inputs, plan.d_in, b1), _table(middle, plan.mid_size, b1),
                   _table(moved, plan.mid_size, b2), _table(outputs, plan.d_out, b2))

    def to(self, device: torch.device) -> _Tables:
        return _Tables(*(t.to(device) for t in (self.in_cols, self.z_cols, self.mid_cols, self.out_cols)))


@functools.cache
def _tables(plan: TwoCorePlan, device: torch.device) -> _Tables:
    return _Tables.of(plan).to(device)


def _width(n: int) -> int:
    """A block dimension's register tile: the next power of two, at least 16 (tl.dot's minimum)."""
    return max(16, triton.next_power_of_2(n))


def _warps(*widths: int) -> int:
    """Warps per program: 8 where a block's tiles are over 64 wide (their weight and dw tiles spill on 4)."""
    return 8 if max(widths) > 64 else 4


def _precision(dtype: torch.dtype) -> str | None:
    """fp32 operands multiply in full fp32 ("ieee", as torch's matmul without TF32); bf16 / fp16: the default."""
    return "ieee" if dtype == torch.float32 else None


def _gemm(a, a_cols, w, out, out_cols, b=None, b_cols=None, splits=None):
    """One _block_gemm launch; w is (blocks, P, K) (any strides). out=None: no output; b given: returns the weight
    gradient sum_t a^T b per block, (blocks, K, Q) fp32. splits=None: one program per token tile."""
    n, (blocks, p, k) = a.shape[0], w.shape
    q = 1 if b_cols is None else b_cols.shape[1]
    tiles = triton.cdiv(n, BLOCK_T)
    splits = tiles if splits is None else splits
    dw = torch.empty(splits, blocks, k, q, device=a.device, dtype=torch.float32) if b is not None else None
    _block_gemm[(splits, blocks)](
        a, a.stride(0), a_cols, w, *w.stride(), out if out is not None else a, 0 if out is None else out.stride(0),
        a_cols if out_cols is None else out_cols, a if b is None else b, 0 if b is None else b.stride(0),
        a_cols if b_cols is None else b_cols, dw, n, tiles, blocks, k, p, q,
        HAS_OUT=out is not None, HAS_DW=b is not None, BLOCK_T=BLOCK_T, BLOCK_K=_width(k), BLOCK_P=_width(p),
        BLOCK_Q=_width(q), PRECISION=_precision(a.dtype), num_warps=_warps(k, p, q),
    )
    return None if dw is None else dw.sum(0)


def forward(x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan, fused: bool | None = None):
    """(z, y) of plan on x (N, d_in) contiguous; w0 (b1, p1, k1), w1 (b2, p2, k2) in x's dtype. fused=None: one
    kernel where a tile's intermediate fits FUSED_TILE_BYTES (module docstring)."""
    n = x.shape[0]
    tab = _tables(plan, x.device)
    z = x.new_empty(n, plan.mid_size)
    y = x.new_empty(n, plan.d_out)
    if n == 0:
        return z, y
    if fused is None:
        fused = BLOCK_T * plan.mid_size * x.element_size() <= FUSED_TILE_BYTES
    if fused:
        (b1, p1, k1, _), (b2, p2, k2, _) = plan.core1, plan.core2
        _fused_forward[(triton.cdiv(n, BLOCK_T),)](
            x, x.stride(0), tab.in_cols, w0, *w0.stride(), z, tab.z_cols, w1, *w1.stride(), tab.mid_cols,
            y, y.stride(0), tab.out_cols, n, b1, k1, p1, b2, k2, p2, BLOCK_T=BLOCK_T, BLOCK_K1=_width(k1),
            BLOCK_P1=_width(p1), BLOCK_K2=_width(k2), BLOCK_P2=_width(p2), PRECISION=_precision(x.dtype),
            num_warps=_warps(k1, p1, k2, p2),
        )
    else:
        _gemm(x, tab.in_cols, w0, z, tab.z_cols)
        _gemm(z, tab.mid_cols, w1, y, tab.out_cols)
    return z, y


def backward(g, x, z, w0, w1, plan: TwoCorePlan, needs: tuple[bool, bool, bool]):
    """(dx, dw0, dw1) of forward for the output gradient g (N, d_out) contiguous; None where not needed."""
    need_x, need_w0, need_w1 = needs
    n = x.shape[0]
    tab = _tables(plan, x.device)
    dx = x.new_empty(n, plan.d_in) if need_x else None
    if n == 0:
        return dx, w0.new_zeros(w0.shape) if need_w0 else None, w1.new_zeros(w1.shape) if need_w1 else None
    tiles = triton.cdiv(n, BLOCK_T)
    splits = min(tiles, max(1, SPLIT_PROGRAMS // max(plan.core1[0], plan.core2[0])))
    dz = x.new_empty(n, plan.mid_size) if need_x or need_w0 else None
    dw1 = _gemm(g, tab.out_cols, w1.transpose(1, 2), dz, tab.mid_cols, z if need_w1 else None, tab.mid_cols, splits)
    dw0 = None
    if dz is not None:
        dw0 = _gemm(dz, tab.z_cols, w0.transpose(1, 2), dx, tab.in_cols, x if need_w0 else None, tab.in_cols, splits)
    return dx, None if dw0 is None else dw0.to(w0.dtype), None if dw1 is None else dw1.to(w1.dtype)


class _TritonTwoCoreFunction(torch.autograd.Function):
    """Forward and backward of apply on the Triton kernels; x (N, d_in), all operands in one dtype."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan) -> torch.Tensor:
        z, y = forward(x, w0, w1, plan)
        ctx.save_for_backward(x, z, w0, w1)
        ctx.plan = plan
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        x, z, w0, w1 = ctx.saved_tensors
        g = g.to(x.dtype).contiguous()
        return *backward(g, x, z, w0, w1, ctx.plan, ctx.needs_input_grad[:3]), None


def apply(x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan) -> torch.Tensor:
    """y = x W^T of plan on x (N, d_in): the operands cast to paths.operand_dtype (the autocast dtype under
    autocast: products of bf16 values accumulated in fp32, y in bf16), as autocast's matmuls take them."""
    dtype = operand_dtype(x)
    x, w0, w1 = (t.to(dtype) for t in (x, w0, w1))
    return _TritonTwoCoreFunction.apply(x.contiguous(), w0, w1, plan)
