"""BTT and Monarch in bf16 on AMX tiles: the C extension csrc/amx_two_core.c behind paths.Path.AMX.

`pip install` builds it as the optional extension `scaling.structures.fastpath._amx_two_core` (x86-64 with a C
compiler that knows AMX; elsewhere it is skipped). It runs where `available()`: built, and the CPU has AMX-TILE and
AMX-BF16 and Linux grants the tile state. It takes the two-core plans `amx_shape` maps (no carried columns, x
read in order, the middle regrouped as BTT's (b1, r, s) -> (s, b1, r) or Monarch's transpose, the output in order
or interleaved) under CPU bf16 autocast, and does a layer's forward, and its whole backward (dx and both weight
gradients, accumulated in fp32 and rounded to bf16 once), each in one pass over tiles of 32 tokens: the
intermediate never leaves the cache, and nothing but the input is saved for the backward (which recomputes the
middle from it).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util

import torch
from torch.autograd.function import once_differentiable

from scaling.structures.fastpath.two_core import TwoCorePlan

_INT64 = ctypes.c_int64
_PTR = ctypes.c_void_p
K_CHUNK, N_CHUNK = 32, 16  # the kernel's tile: 32 bf16 of a block's inputs, 16 of its outputs


class _Shape(ctypes.Structure):
    _fields_ = [(name, _INT64) for name in
                ("n", "d_in", "d_out", "b1", "p1", "k1", "rank", "s", "p2", "interleaved")]


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The loaded extension, or None when it was not built or this CPU (or kernel) cannot run AMX."""
    spec = importlib.util.find_spec("scaling.structures.fastpath._amx_two_core")
    if spec is None or spec.origin is None:
        return None
    lib = ctypes.CDLL(spec.origin)
    if not lib.amx_two_core_supported():
        return None
    lib.amx_two_core_forward.argtypes = [ctypes.POINTER(_Shape)] + [_PTR] * 4 + [ctypes.c_int]
    lib.amx_two_core_backward.argtypes = [ctypes.POINTER(_Shape)] + [_PTR] * 8 + [ctypes.c_int]
    for name in ("amx_two_core_forward", "amx_two_core_backward"):
        getattr(lib, name).restype = ctypes.c_int
    lib.amx_two_core_pack.argtypes = [_PTR] + [_INT64] * 7 + [_PTR]
    lib.amx_two_core_pack.restype = None
    lib.amx_two_core_x_in_pairs.argtypes = [ctypes.POINTER(_Shape)]
    lib.amx_two_core_x_in_pairs.restype = ctypes.c_int
    lib.amx_two_core_row_dots.argtypes = [_INT64, _INT64, _PTR, _PTR, _PTR, ctypes.c_int]
    lib.amx_two_core_row_dots.restype = None
    lib.amx_two_core_combine.argtypes = [_INT64] * 3 + [_PTR] * 4 + [ctypes.c_int]
    lib.amx_two_core_combine.restype = None
    return lib


def available() -> bool:
    """Whether the AMX kernel can run here (built, AMX CPU, tile state granted)."""
    return _library() is not None


@functools.cache  # asked on every bf16 layer call (paths.amx_chosen) and by each kernel call
def amx_shape(plan: TwoCorePlan) -> tuple[int, ...] | None:
    """(b1, p1, k1, rank, s, p2, interleaved) of a plan the kernel runs (module docstring), else None."""
    plan = plan.without_unit_axes()
    (b1, p1, k1, c1), (b2, p2, k2, c2) = plan.core1, plan.core2
    if c1 != 1 or c2 != 1 or plan.in_axes != (b1, k1) or plan.in_perm != (0, 1) or plan.out_axes != (b2, p2):
        return None
    if plan.mid_axes == (b1, p1) and plan.mid_perm == (1, 0):
        rank = 1
    elif len(plan.mid_axes) == 3 and plan.mid_axes[0] == b1 and plan.mid_perm == (2, 0, 1):
        rank = plan.mid_axes[1]
    else:
        return None
    if b2 * rank != p1 or k2 != b1 * rank or plan.out_perm not in ((0, 1), (1, 0)):
        return None
    return b1, p1, k1, rank, b2, p2, int(plan.out_perm == (1, 0))


def pack(w: torch.Tensor, shift: int = 0) -> torch.Tensor:
    """w (blocks, N, K) bf16, any strides, applied as out[t, n] = sum_k a[t, k] w[b, n, k], as the kernel's B tiles:
    N padded to 16s and K to 32s with zeros, pairs of k interleaved per column (AMX's VNNI layout):
    (blocks, N / 16, K / 2, 16, 2). shift: block b's K starts (b shift) mod 32 into its padded K (core 1 where the
    kernel reads x's blocks in pairs, csrc x_in_pairs; that offset is 0 or 16 and K = 16 + 32 j)."""
    blocks, n, k = w.shape
    out = w.new_empty(blocks, -(-n // N_CHUNK), -(-k // K_CHUNK) * K_CHUNK // 2, N_CHUNK, 2)
    _library().amx_two_core_pack(w.data_ptr(), blocks, n, k, *w.stride(), shift, out.data_ptr())
    return out


def pack_core1(w0: torch.Tensor, shape: _Shape) -> torch.Tensor:
    """Core 1's weights packed as the kernel reads x for this shape: shifted where it reads x's blocks in pairs."""
    return pack(w0, shape.k1 if _library().amx_two_core_x_in_pairs(ctypes.byref(shape)) else 0)


def row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_c a[r, c] b[r, c] per row of two (N, d) bf16 matrices, as fp32: each product exact in fp32 and summed
    there, in one pass over both (the extension's AVX-512 loop; torch ops needed three passes and two upcasts)."""
    a, b = a.contiguous(), b.contiguous()
    out = torch.empty(a.shape[0], dtype=torch.float32)
    _library().amx_two_core_row_dots(a.shape[0], a.shape[1], a.data_ptr(), b.data_ptr(), out.data_ptr(),
                                     torch.get_num_threads())
    return out


def combine(rows: torch.Tensor, slots: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """out[n] = bf16(sum_j weights[s] rows[s]) over the slots s = slots[n, j] (weights 1 when None): bf16 rows (S, d),
    int64 slots (N, k), float32 weights (S,); products and sums in fp32, rounded once; each out row written once."""
    rows, slots = rows.contiguous(), slots.contiguous()
    out = rows.new_empty(slots.shape[0], rows.shape[1])
    _library().amx_two_core_combine(slots.shape[0], slots.shape[1], rows.shape[1], rows.data_ptr(), slots.data_ptr(),
                                    0 if weights is None else weights.contiguous().data_ptr(), out.data_ptr(),
                                    torch.get_num_threads())
    return out


def _shape(plan: TwoCorePlan, n: int) -> _Shape:
    return _Shape(n, plan.d_in, plan.d_out, *amx_shape(plan))


def _check(status: int) -> None:
    if status != 0:
        raise MemoryError("the AMX kernel could not allocate its scratch buffers or accumulators")


def forward(
    x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan, out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """y = two_core(x) on AMX (into out, contiguous, when given) and core 1's packed weights (the backward reads them
    again); x (N, d_in) contiguous, w0 (b1, p1, k1), w1 (b2, p2, k2), all bf16."""
    y = x.new_empty(x.shape[0], plan.d_out) if out is None else out
    shape = _shape(plan, x.shape[0])
    packed = (pack_core1(w0, shape), pack(w1))  # held: the kernel reads them
    _check(_library().amx_two_core_forward(
        ctypes.byref(shape), x.data_ptr(), packed[0].data_ptr(), packed[1].data_ptr(), y.data_ptr(),
        torch.get_num_threads()))
    return y, packed[0]


def backward(
    x: torch.Tensor, dy: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan,
    w0_packed: torch.Tensor | None = None, dx_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dw0, dw1) of forward's y given dy (N, d_out), all bf16; dx into dx_out (contiguous) when given, dw0 and
    dw1 contiguous; w0_packed: forward's, else packed again."""
    shape = _shape(plan, x.shape[0])
    dy = dy.to(torch.bfloat16).contiguous()
    dx = x.new_empty(x.shape) if dx_out is None else dx_out
    dw0, dw1 = w0.new_empty(w0.shape), w1.new_empty(w1.shape)  # contiguous (w0, w1 may be strided views)
    w0_packed = pack_core1(w0, shape) if w0_packed is None else w0_packed
    packed = (w0_packed, pack(w1.transpose(1, 2)), pack(w0.transpose(1, 2)))
    _check(_library().amx_two_core_backward(
        ctypes.byref(shape), x.data_ptr(), dy.data_ptr(), *(p.data_ptr() for p in packed), dx.data_ptr(),
        dw0.data_ptr(), dw1.data_ptr(), torch.get_num_threads()))
    return dx, dw0, dw1


class AmxTwoCoreFunction(torch.autograd.Function):
    """y = two_core(x) on AMX; x (N, d_in) contiguous, w0 (b1, p1, k1), w1 (b2, p2, k2), all bf16."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, plan: TwoCorePlan) -> torch.Tensor:
        y, w0_packed = forward(x, w0, w1, plan)
        ctx.save_for_backward(x, w0, w1, w0_packed)
        ctx.plan = plan
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: torch.Tensor):
        x, w0, w1, w0_packed = ctx.saved_tensors
        dx, dw0, dw1 = backward(x, dy, w0, w1, ctx.plan, w0_packed)
        needs = ctx.needs_input_grad
        return dx if needs[0] else None, dw0 if needs[1] else None, dw1 if needs[2] else None, None
