"""The autograd Functions that execute two-core plans (two_core.py) on the CPU, and their entry points.

`two_core_apply` runs one plan (BTT, Monarch, Einsum); `routed_two_core_apply` a mixture of two-core experts
(BTT-MoE); `tt2_apply` the 2-core Tensor-Train (Kronecker at rank 1). Which path each call takes is
paths.select_path's decision under a PathPolicy (passed in, or paths.current_policy()); the Functions run the
bmm schedule (bmm_schedule.py), the native offset GEMM (token_major.py) or the AMX kernel (amx.py, bf16) and never
choose for themselves. On CUDA two_core_apply runs triton_two_core.apply (Path.TRITON), imported only then (triton
is optional).

Under CPU bf16 autocast the entry points hand the Functions their operands rounded to bf16 (as autocast's matmuls
round theirs) in paths.compute_dtype, run them with autocast off, and return bf16 (`_in_compute_precision`): the
products are those of the bf16 values, accumulated in fp32 (the fp32 paths: bf16 values are exact in fp32; the
bf16 GEMMs: oneDNN accumulates in fp32). On bf16 GEMMs the batch runs as one chunk, so each weight gradient is one
GEMM rounded to bf16 once.

Mixtures of experts run every routed expert inside one Function: the slots sorted by expert are gathered once,
each expert runs the schedule on its segment, and the gated outputs are added back with one index_add, so
dispatch costs a few passes over the slots rather than a gather, a concatenation and an autograd scatter per expert.

The 2-core Tensor-Train has a cheaper schedule that copies nothing in the forward: core 0 runs per token on x
read in place, core 1 as one plain GEMM. The fast backward is once-differentiable; the plain path (REFERENCE)
also supports double backward. The fast forward issues the same GEMM FLOPs as the analytic counts (bmm / mm,
which torch's FlopCounterMode sees), chunk by chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from scaling.structures.fastpath import bmm_schedule
from scaling.structures.fastpath import amx, native
from scaling.structures.fastpath.bmm_schedule import reference_apply
from scaling.structures.fastpath.paths import (
    Path, PathPolicy, autocast_bf16, compute_dtype, current_policy, select_path,
)
from scaling.structures.fastpath.token_major import (
    TokenMajorPlan, native_backward_pieces, native_forward_pieces, token_major_plan,
)
from scaling.structures.fastpath.two_core import TwoCorePlan, chunk_tokens


@dataclass(frozen=True)
class _Schedule:
    """How one fused call runs: the plan, and its offset tables when on the native GEMM, or amx on the AMX kernel
    (else the bmm chunks)."""

    plan: TwoCorePlan
    tm: TokenMajorPlan | None
    chunk: int
    tile: int
    amx: bool = False

    @classmethod
    def of(cls, plan: TwoCorePlan, path: Path, chunk: int | None, policy: PathPolicy) -> _Schedule:
        tm = token_major_plan(plan) if path is Path.NATIVE else None
        chunk = plan.chunk_tokens() if chunk is None else chunk
        return cls(plan, tm, chunk, policy.native_tile_tokens, amx=path is Path.AMX)

    def forward(self, x, w0, w1, counts):
        """(pieces, x operand, z, y): whole segments on the native GEMM and the AMX kernel, chunks of them on bmm.
        z, core 1's outputs saved for the backward, is None on the native GEMM and the AMX kernel, whose backwards
        recompute it."""
        if self.tm is None and not self.amx:
            pieces = bmm_schedule.row_pieces(counts, self.chunk)
            return (pieces, *bmm_schedule.forward_pieces(x, w0, w1, self.plan, pieces))
        pieces = bmm_schedule.row_pieces(counts, max(1, sum(counts)))
        if self.amx:
            x_op, y = x.contiguous(), x.new_empty(x.shape[0], self.plan.d_out)
            for e, start, stop in pieces:
                amx.forward(x_op[start:stop], w0[e], w1[e], self.plan, out=y[start:stop])
            return pieces, x_op, None, y
        x_op, y = native_forward_pieces(x, w0, w1, self.tm, pieces, self.tile)
        return pieces, x_op, None, y

    def backward(self, g, x_op, z_all, w0, w1, pieces, needs):
        """forward's gradients (dx, dw0, dw1) on the same path (the AMX kernel computes all three)."""
        if self.amx:
            dx, dw0, dw1 = x_op.new_empty(x_op.shape), w0.new_zeros(w0.shape), w1.new_zeros(w1.shape)
            for e, start, stop in pieces:
                _, dw0[e], dw1[e] = amx.backward(x_op[start:stop], g[start:stop], w0[e], w1[e], self.plan,
                                                 dx_out=dx[start:stop])
            return dx, dw0, dw1
        if self.tm is None:
            return bmm_schedule.backward_pieces(g, x_op, z_all, w0, w1, self.plan, pieces, needs)
        return native_backward_pieces(g, x_op, w0, w1, self.tm, pieces, self.tile, needs)


class _TwoCoreFunction(torch.autograd.Function):
    """Forward and backward of two_core_apply on chunks of tokens; x is (N, d_in)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, schedule: _Schedule) -> torch.Tensor:
        pieces, x_op, z_all, y = schedule.forward(x, w0.unsqueeze(0), w1.unsqueeze(0), [x.shape[0]])
        ctx.save_for_backward(x_op, z_all, w0, w1)
        ctx.schedule, ctx.pieces = schedule, pieces
        return y

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")  # autocast as in the forward (off)
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        x_op, z_all, w0, w1 = ctx.saved_tensors
        dx, dw0, dw1 = ctx.schedule.backward(
            g, x_op, z_all, w0.unsqueeze(0), w1.unsqueeze(0), ctx.pieces, ctx.needs_input_grad[:3]
        )
        return dx, None if dw0 is None else dw0[0], None if dw1 is None else dw1[0], None


class _RoutedTwoCoreFunction(torch.autograd.Function):
    """Mixture of two-core experts: y_n = sum_j gate_nj * expert_{e_nj}(x_n), only the routed experts computed.

    The N k (token, expert) slots come sorted by expert (`tokens`: the token of each slot; `slots`: each token's k
    slots; `counts`: slots per expert). Gathering the slots' inputs is one pass (index_select), each expert runs the
    two-core schedule on its contiguous segment, and gating the outputs and adding them back per token one more
    (`combine`). Backward: the gate gradient is <dy_n, expert output> per slot (`row_dots`), dx added back as y.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(
        ctx, x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, gates: torch.Tensor, schedule: _Schedule,
        tokens: torch.Tensor, slots: torch.Tensor, counts: list[int],
    ) -> torch.Tensor:
        pieces, x_op, z_all, ys = schedule.forward(x.index_select(0, tokens), w0, w1, counts)
        y = combine(ys, tokens, slots, gates)
        ctx.save_for_backward(x_op, z_all, ys, w0, w1, gates, tokens, slots)
        ctx.schedule, ctx.pieces, ctx.tokens_in = schedule, pieces, x.shape[0]
        return y

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")  # autocast as in the forward (off)
    @once_differentiable
    def backward(ctx, dy: torch.Tensor):
        x_op, z_all, ys, w0, w1, gates, tokens, slots = ctx.saved_tensors
        need_x, need_w0, need_w1, need_gates = ctx.needs_input_grad[:4]
        dys = dy.index_select(0, tokens)  # each slot's share of the output gradient
        dgates = row_dots(dys, ys) if need_gates else None
        dys.mul_(gates[:, None])
        dxs, dw0, dw1 = ctx.schedule.backward(dys, x_op, z_all, w0, w1, ctx.pieces, (need_x, need_w0, need_w1))
        dx = combine(dxs, tokens, slots) if need_x else None
        return dx, dw0, dw1, dgates, None, None, None, None


def row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_d a[s, d] b[s, d] for every row s, in a's dtype; bf16 and fp16 operands multiplied in fp32 (their
    products are exact there) and summed in fp32. On the CPU one pass over both by the extensions where they run
    (amx.row_dots for bf16, native.row_dots for fp32), else torch ops. An einsum ran this as a batched GEMM of
    1 x 1 outputs: 3.5x (fp32) and 2.9x (bf16) slower at 8,192 x 1,024 than elementwise products and a sum, and
    the extensions' passes are faster again (BTT-MoE's step at d = 1024 1.15x in bf16, 1.1x in fp32)."""
    on_cpu = a.device.type == "cpu"
    if a.dtype == torch.bfloat16 and on_cpu and amx.available():
        return amx.row_dots(a, b).to(a.dtype)
    if a.dtype == torch.float32 and on_cpu and native.available():
        return native.row_dots(a, b)
    if a.dtype in (torch.bfloat16, torch.float16):
        return a.float().mul_(b).sum(-1).to(a.dtype)
    return torch.linalg.vecdot(a, b)


def combine(
    rows: torch.Tensor, tokens: torch.Tensor, slots: torch.Tensor, weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """y[n] = sum_j weights[s] rows[s] over token n's slots s = slots[n, j] (weights 1 when None), (N, d) from the
    slots' rows (S, d), tokens[s] the token of slot s: a mixture's experts added back per token. On the CPU one pass
    of the extensions where they run (fp32 sums; bf16 rounded once), which writes each row once, else a gated,
    zero-filled index_add."""
    if rows.device.type == "cpu":
        w = None if weights is None else weights.float()
        if rows.dtype == torch.bfloat16 and amx.available():
            return amx.combine(rows, slots, w)
        if rows.dtype == torch.float32 and native.available():
            return native.combine(rows, slots, w)
    source = rows if weights is None else rows * weights[:, None]
    return rows.new_zeros(slots.shape[0], rows.shape[1]).index_add_(0, tokens, source)


def _in_compute_precision(x: torch.Tensor, policy: PathPolicy, run, *operands: torch.Tensor) -> torch.Tensor:
    """run(*operands) on a fused path; under CPU bf16 autocast with the float operands rounded to bf16 and held in
    paths.compute_dtype, autocast off inside, and the result returned in bf16 (module docstring)."""
    if not autocast_bf16(x):
        return run(*operands)
    dtype = compute_dtype(x, policy)
    cast = [t.to(torch.bfloat16).to(dtype) if t.is_floating_point() else t for t in operands]
    with torch.autocast("cpu", enabled=False):
        return run(*cast).to(torch.bfloat16)


def _whole_batch_on_bf16(x: torch.Tensor, policy: PathPolicy, chunk: int | None) -> int | None:
    """chunk, or the whole batch as one chunk where the GEMMs run in bf16 (module docstring)."""
    if chunk is None and autocast_bf16(x) and compute_dtype(x, policy) == torch.bfloat16:
        return max(1, x.shape[0])
    return chunk


def two_core_apply(
    x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan, chunk: int | None = None,
    policy: PathPolicy | None = None,
) -> torch.Tensor:
    """y = x W^T of a two-core structure; x (..., d_in) -> (..., d_out); w0 (b1, p1, k1), w1 (b2, p2, k2).

    The path is select_path's (the REFERENCE path supports double backward); chunk overrides the bmm chunk size.
    """
    if x.shape[-1] != plan.d_in:
        raise ValueError(f"input has {x.shape[-1]} features, the layer expects d_in={plan.d_in}")
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1 (tokens per chunk)")
    policy = current_policy() if policy is None else policy
    lead = x.shape[:-1]
    flat = x.reshape(-1, plan.d_in)
    path = select_path(plan, flat, policy)
    if path is Path.REFERENCE:
        y = reference_apply(flat, w0, w1, plan)
    elif path is Path.AMX:
        y = _in_compute_precision(flat, policy, lambda x, w0, w1: amx.AmxTwoCoreFunction.apply(
            x.contiguous(), w0, w1, plan), flat, w0, w1)
    elif path is Path.TRITON:
        from scaling.structures.fastpath import triton_two_core

        y = triton_two_core.apply(flat, w0, w1, plan)
    else:
        schedule = _Schedule.of(plan, path, _whole_batch_on_bf16(flat, policy, chunk), policy)
        y = _in_compute_precision(flat, policy, lambda *ops: _TwoCoreFunction.apply(*ops, schedule), flat, w0, w1)
    return y.reshape(*lead, plan.d_out)


def routed_two_core_apply(
    x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan, experts: torch.Tensor,
    gates: torch.Tensor, chunk: int | None = None, policy: PathPolicy | None = None,
) -> torch.Tensor:
    """y_n = sum_j gates[n, j] * expert_{experts[n, j]}(x_n) with two-core experts, on a fused CPU path (the caller
    checks select_path(plan, x, policy, routed=True) is BMM, NATIVE or AMX).

    x (N, d_in); w0 (E, b1, p1, k1) and w1 (E, b2, p2, k2) hold the experts' core views; experts (N, k) the routed
    expert ids, gates (N, k) their weights. Only the routed experts run (routing.mix_experts' slot order).
    """
    if x.dim() != 2 or x.shape[-1] != plan.d_in:
        raise ValueError(f"input has shape {tuple(x.shape)}, the experts expect (tokens, d_in={plan.d_in})")
    policy = current_policy() if policy is None else policy
    path = select_path(plan, x, policy, routed=True)
    if path not in (Path.BMM, Path.NATIVE, Path.AMX):
        raise ValueError(f"routed_two_core_apply runs the fused CPU Functions only: this call's path is {path.name}")
    flat = experts.reshape(-1)
    order = torch.argsort(flat, stable=True)
    tokens = order // experts.shape[-1]  # slot n k + j belongs to token n
    slots = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
    slots = slots.view(experts.shape)  # slots[n, j]: where token n's j-th expert's slot went
    counts = torch.bincount(flat, minlength=w0.shape[0]).tolist()
    schedule = _Schedule.of(plan, path, _whole_batch_on_bf16(x, policy, chunk), policy)

    def run(x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        slot_gates = gates.reshape(-1)[order].to(x.dtype)
        return _RoutedTwoCoreFunction.apply(x, w0, w1, slot_gates, schedule, tokens, slots, counts)

    return _in_compute_precision(x, policy, run, x, w0, w1, gates)


# --- 2-core Tensor-Train (and Kronecker): token-major ---------------------------------------------------------
class _TensorTrain2Function(torch.autograd.Function):
    """Forward and backward of tt2_apply; x (N, n1 n2) contiguous, g0 (m1 r, n1), g1 (m2, r n2).

    Core 0 contracts the outer input axis: per token, z[n] = g0 @ x[n] with x[n] read in place as (n1, n2), one
    bmm over the chunk's tokens with g0 expanded (not copied). Core 1 contracts (s, i2): the rows (n, j1) of z are
    contiguous, so y = z (t m1, r n2) @ g1^T is one plain GEMM writing y token-major. The forward copies nothing;
    the backward copies twice per chunk, for dg0 = sum_n dz[n] x[n]^T as one GEMM over (n, i2) (once where the
    native GEMM of native.py reads dz in place).
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, x: torch.Tensor, g0: torch.Tensor, g1: torch.Tensor, chunk: int, native_dg0: bool) -> torch.Tensor:
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
        ctx.chunk, ctx.native_dg0 = chunk, native_dg0
        return y

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")  # autocast as in the forward (off)
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
        native_ok = need_g0 and ctx.native_dg0
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
        return dx, dg0, dg1, None, None


def _tt2_native_dg0(dz: torch.Tensor, x_t: torch.Tensor, dg0: torch.Tensor) -> None:
    """dg0 (mr, n1) += sum over (token, i2) of dz[t, m, i2] x_t[t, i2, i1], on the native GEMM (dz in place)."""
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
    x: torch.Tensor, core0: torch.Tensor, core1: torch.Tensor, chunk: int | None = None,
    policy: PathPolicy | None = None,
) -> torch.Tensor:
    """y = x W^T for a 2-core TT (Kronecker at rank 1) with cores (m1, r, 1, n1), (m2, 1, r, n2); x (..., n1 n2).

    Core 0 first, as tt.TTLayout counts its FLOPs. The fused Function whenever policy.fused_usable (no size
    floor); else tt2_reference. Its core-0 gradient runs on the native GEMM where policy.native_usable, from
    native_min_elements (tokens x d_in) up.
    """
    (m1, r, _, n1), (m2, _, _, n2) = core0.shape, core1.shape
    if x.shape[-1] != n1 * n2:
        raise ValueError(f"input has {x.shape[-1]} features, the layer expects d_in={n1 * n2}")
    policy = current_policy() if policy is None else policy
    lead = x.shape[:-1]
    flat = x.reshape(-1, n1 * n2)
    chunk = _whole_batch_on_bf16(flat, policy, chunk)
    chunk = chunk_tokens(n1 * n2, m1 * m2) if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1 (tokens per chunk)")
    if policy.fused_usable(flat) and flat.shape[0] > 0:
        g0, g1 = core0.reshape(m1 * r, n1), core1.reshape(m2, r * n2)
        native_dg0 = policy.native_usable(flat) and flat.numel() >= policy.native_min_elements
        y = _in_compute_precision(
            flat, policy, lambda *ops: _TensorTrain2Function.apply(*ops, chunk, native_dg0), flat.contiguous(), g0, g1
        )
    else:
        y = tt2_reference(flat, core0, core1)
    return y.reshape(*lead, m1 * m2)
