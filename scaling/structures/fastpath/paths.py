"""Which path a structured layer's call runs: plain ops, the fused bmm schedule, the native offset GEMM, the AMX
kernel, or Triton.

One frozen `PathPolicy` holds every knob; `select_path(plan, x, policy)` applies it. SCALING_NATIVE, SCALING_AMX and
SCALING_TRITON are read once, into DEFAULT_POLICY. A caller (a test, a benchmark) passes its own policy, or scopes
one over a block of layer calls with `use_policy(policy)`; layers call the kernels without one and get
`current_policy()`.

    REFERENCE  plain differentiable ops (kernels.reference_apply): other devices (and CUDA where TRITON does not
               run), under torch.compile (inductor traces and fuses them), policy.fused off, or a two-core call
               below fused_min_elements; supports double backward
    BMM        the fused Functions on MKL's batched GEMMs (bmm_schedule.py), any float dtype on the CPU
    NATIVE     the fused Functions on the native offset GEMM (token_major.py, the C extension csrc/), float32
               compute only, for plans it runs fast (native_tables), and never under a torch dispatch mode
               (FlopCounterMode cannot see it)
    AMX        the bf16 kernel of amx.py (the C extension csrc/amx_two_core.c): under CPU bf16 autocast with bf16
               GEMMs, on CPUs with AMX, for the plans amx.amx_shape takes (BTT, Monarch, Einsum at BTT's points,
               two-core Tensor-Trains and Kronecker in square layers: tt.tt2_plan),
               a layer, or each routed expert on its segment of tokens, never under a torch dispatch mode (as
               NATIVE); measured
               fwd+bwd at d = 1024, 4,096 tokens, 2 threads: BTT rank 1 1.96x dense bf16's speed (the bmm path
               1.2x), Monarch 1.6x (0.86x); below fused_min_elements plain ops, as the bmm path
    TRITON     on CUDA, the Triton kernels of triton_two_core.py (triton_chosen): eager, triton importable,
               plans with c1 = c2 = 1 (BTT, Monarch) and blocks at most TRITON_MAX_BLOCK wide, fp32 / bf16 / fp16
               operands (under CUDA autocast the autocast dtype, accumulated in fp32), never under a torch dispatch
               mode (as NATIVE); no size floor (unmeasured)

Precision. Under CPU bf16 autocast (train.precision=bf16) the fused paths take the operands rounded to bf16, as
autocast's matmuls do, accumulate in fp32 and return bf16 (kernels.autocast_operands). `compute_dtype` says which
dtype their GEMMs run in: bf16 where the CPU has bf16 GEMM instructions (AMX or AVX512-BF16: oneDNN's bf16
kernels, policy.bf16_gemm), else float32, where the products of bf16 values are exact and the native path runs
(a CPU without them multiplies bf16 matrices ~60x slower than fp32: 0.5 against 29 GFLOP/s at 1024^3 on 2 AVX2
cores). There no size floor applies either: plain ops would run those slow bf16 matmuls.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from scaling.structures.fastpath import amx, native
from scaling.structures.fastpath.token_major import TokenMajorPlan, token_major_plan
from scaling.structures.fastpath.two_core import TwoCorePlan


class Path(enum.Enum):
    REFERENCE = "reference"
    BMM = "bmm"
    NATIVE = "native"
    AMX = "amx"
    TRITON = "triton"


@dataclass(frozen=True)
class PathPolicy:
    """The knobs of path selection (measured defaults; see the comments on each).

    fused: use the fused Functions at all (False: plain ops everywhere).
    native: let the native offset GEMM run where it is built (SCALING_NATIVE=0 switches it off).
    fused_min_elements: two-core calls below this many tokens x the wider end run plain ops. There the fused
        Function's fixed cost per call (chunks, scratch buffers, hand-written backward) outweighs the copies it
        saves. Measured fwd+bwd of one layer, plain / fused bmm time: BTT rank 1 0.69-0.92, Monarch 0.71-0.87,
        Einsum 0.47-0.87 below 2^18 (d = 64 x 512 tokens to 256 x 512); 0.75-1.14 from 2^18 up, where the
        native path (from 2^19) beats both. In GPT-2 (4 layers, BTT rank 1): 1.3x the tokens/s at d = 64 x 512
        tokens a step, but 0.94-0.97x at d = 128 x 2,048 with the plain path also at 2^18 (so that is where it
        stops).
    native_min_elements: below this (tokens x the wider end) MKL's batched GEMM beats the native one on the
        small blocks (inner dimension 16-24), even with the offset tables cached: measured fwd+bwd of BTT rank 1,
        native / bmm time, 1.3-1.45 at d = 256 x 1,024 and 2,048 tokens and at 384 x 2,048, 1.05 at
        512 x 1,024, 0.9-1.1 at 512 x 2,048.
    native_max_expansion: the native path takes plans whose middle is at most this x the wider end: measured
        fwd+bwd at d = 1024 (OMP_WAIT_POLICY=PASSIVE), vs the bmm path, BTT rank 1 1.35x and Monarch 1.4x
        faster, rank 2 1.1x, but rank 4 1.2x slower (its weight gradients stream 4x wider intermediates).
    native_column_multiple: its micro-kernel holds 8 columns per register, so blocks whose sizes are not
        multiples of this waste part of one on every strip; fwd+bwd of Monarch with 20, 23, 28 and 39 blocks
        (d = 384, 512, 768, 1536) measured 1.3x, 1.0x, 1.0-1.1x and 1.03x the bmm path's time: those stay on bmm.
    native_tile_tokens: the native path runs every GEMM of the forward (or backward) on one tile of this many
        tokens before the next, its middle in a per-thread scratch of that many rows; with the scratch, fwd+bwd
        with 32 against 16 measured 1.05-1.09x faster for BTT rank 1 at d = 512 and 768, 1.03x for Monarch at
        1024, the same for BTT at 1024 and rank 2 (24 and 48 within noise of 32; 128 was 10% slower before).
    bf16_gemm: under CPU bf16 autocast, run the fused paths' GEMMs in bf16 (oneDNN's AMX / AVX512-BF16 kernels)
        rather than in fp32 on bf16-rounded operands; from_environment sets it where the CPU has those
        instructions (cpu_has_bf16_gemm).
    amx: under bf16 GEMMs, run the plans it takes on the AMX kernel where it is built and the CPU has AMX
        (SCALING_AMX=0 switches it off).
    triton: on CUDA, run the two-core plans it supports on the Triton kernels (SCALING_TRITON=0 switches it off).
    """

    fused: bool = True
    native: bool = True
    fused_min_elements: int = 1 << 18
    native_min_elements: int = 1 << 19
    native_max_expansion: int = 2
    native_column_multiple: int = 8
    native_tile_tokens: int = 32
    bf16_gemm: bool = False
    amx: bool = True
    triton: bool = True

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> PathPolicy:
        """The defaults, with native (amx, triton) off where SCALING_NATIVE (SCALING_AMX, SCALING_TRITON) is "0" and
        bf16_gemm where the CPU has bf16 GEMMs."""
        environ = os.environ if environ is None else environ
        return cls(native=environ.get("SCALING_NATIVE", "1") != "0", bf16_gemm=cpu_has_bf16_gemm(),
                   amx=environ.get("SCALING_AMX", "1") != "0", triton=environ.get("SCALING_TRITON", "1") != "0")

    def fused_usable(self, x: torch.Tensor) -> bool:
        """The fused Functions may take x: enabled, and (uses_fast_path) on the CPU, eager, fp32 or bf16 autocast."""
        return self.fused and uses_fast_path(x)

    def native_usable(self, x: torch.Tensor) -> bool:
        """The native GEMM may take x: enabled and available here, computing in float32 on the CPU, and no torch
        dispatch mode (FlopCounterMode) watching."""
        return self.native and compute_dtype(x, self) == torch.float32 and x.device.type == "cpu" and (
            native.available() and _get_current_dispatch_mode() is None
        )

    def size_floor(self, x: torch.Tensor) -> bool:
        """Whether fused_min_elements applies to x: not under bf16 autocast computing in fp32 (module docstring)."""
        return not (autocast_bf16(x) and not self.bf16_gemm)


def cpu_has_bf16_gemm() -> bool:
    """This CPU has bf16 matrix instructions (AMX tiles or AVX512-BF16), which oneDNN's bf16 GEMMs run on."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def autocast_bf16(x: torch.Tensor) -> bool:
    """x is on the CPU under bf16 autocast."""
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and (
        torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def compute_dtype(x: torch.Tensor, policy: PathPolicy) -> torch.dtype:
    """The dtype the fused paths' GEMMs run in for x: under CPU bf16 autocast bf16 where policy.bf16_gemm, else
    float32 (the operands rounded to bf16 first); x's own dtype outside autocast."""
    if autocast_bf16(x):
        return torch.bfloat16 if policy.bf16_gemm else torch.float32
    return x.dtype


DEFAULT_POLICY = PathPolicy.from_environment()
_CURRENT: contextvars.ContextVar[PathPolicy] = contextvars.ContextVar("path_policy", default=DEFAULT_POLICY)


def native_runs() -> bool:
    """The native GEMM is built, usable on this CPU and not switched off (SCALING_NATIVE=0, in DEFAULT_POLICY)."""
    return DEFAULT_POLICY.native and native.available()


def current_policy() -> PathPolicy:
    """The policy in force: the innermost use_policy, else DEFAULT_POLICY."""
    return _CURRENT.get()


@contextlib.contextmanager
def use_policy(policy: PathPolicy) -> Iterator[PathPolicy]:
    """Run the layer calls inside the block under `policy`."""
    token = _CURRENT.set(policy)
    try:
        yield policy
    finally:
        _CURRENT.reset(token)


def uses_fast_path(x: torch.Tensor) -> bool:
    """The fused Functions are tuned for (and tested on) the CPU, eager, outside autocast or under bf16 autocast;
    other devices, other autocast dtypes and torch.compile (which traces and fuses plain ops; the Functions call
    ctypes) take the plain reference path."""
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    return not torch.is_autocast_enabled("cpu") or autocast_bf16(x)


def native_tables(plan: TwoCorePlan, x: torch.Tensor, policy: PathPolicy) -> TokenMajorPlan | None:
    """The offset-GEMM tables of plan when the native path runs it on x (N, d_in): native usable, at least
    native_min_elements, the plan token-major-able, at most native_max_expansion x wider in the middle, and every
    GEMM's column count (p1, k1, p2, k2) a multiple of native_column_multiple."""
    wider = max(plan.in_size, plan.out_size)
    if not policy.native_usable(x) or x.shape[0] * wider < policy.native_min_elements:
        return None
    (_, p1, k1, _), (_, p2, k2, _) = plan.core1, plan.core2
    if plan.mid_size > policy.native_max_expansion * wider:
        return None
    if any(size % policy.native_column_multiple for size in (p1, k1, p2, k2)):
        return None
    return token_major_plan(plan)


TRITON_MAX_BLOCK = 128  # the Triton kernels hold a block's (tokens x width) tiles and its weight in registers
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@functools.cache
def triton_available() -> bool:
    """triton imports here (guarded: users may lack it, or have a build that fails to load)."""
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def triton_supports(plan: TwoCorePlan) -> bool:
    """The Triton kernels run plan: no carried columns (c1 = c2 = 1: BTT, Monarch) and every block dimension at most
    TRITON_MAX_BLOCK."""
    (_, p1, k1, c1), (_, p2, k2, c2) = plan.core1, plan.core2
    return c1 == c2 == 1 and max(p1, k1, p2, k2) <= TRITON_MAX_BLOCK


def operand_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype x's matmuls take their operands in: the autocast dtype of x's device under autocast, else x's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def triton_chosen(
    device_type: str, dtype: torch.dtype, available: bool, supported: bool, watched: bool, policy: PathPolicy,
) -> bool:
    """A call runs on the Triton kernels: on CUDA, operands (operand_dtype) in TRITON_DTYPES, triton available, the
    plan supported (triton_supports), not watched by a torch dispatch mode (FlopCounterMode cannot see the kernels:
    models.flops.measure_flops counts the plain ops), and policy.fused and policy.triton."""
    return device_type == "cuda" and dtype in TRITON_DTYPES and available and supported and not watched and (
        policy.fused and policy.triton
    )


def amx_chosen(plan: TwoCorePlan, x: torch.Tensor, policy: PathPolicy) -> bool:
    """The AMX kernel runs this call: policy.amx, GEMMs in bf16 (compute_dtype), the kernel available, the plan one it
    takes (amx.amx_shape), and no torch dispatch mode watching (FlopCounterMode cannot see the kernel)."""
    if not policy.amx or compute_dtype(x, policy) != torch.bfloat16 or _get_current_dispatch_mode() is not None:
        return False
    return amx.available() and amx.amx_shape(plan) is not None


def select_path(plan: TwoCorePlan, x: torch.Tensor, policy: PathPolicy, routed: bool = False) -> Path:
    """The path of one two-core call on x (N, d_in). routed: the experts of a mixture, which skip fused_min_elements
    (their plain alternative is a loop over experts) and run on BMM, NATIVE or AMX."""
    if x.device.type != "cpu" and not torch.compiler.is_compiling():
        cuda = x.device.type == "cuda"  # (other devices may have no autocast state to ask)
        chosen = triton_chosen(x.device.type, operand_dtype(x) if cuda else x.dtype, cuda and triton_available(),
                               triton_supports(plan), _get_current_dispatch_mode() is not None, policy)
        return Path.TRITON if chosen else Path.REFERENCE
    if not policy.fused_usable(x):
        return Path.REFERENCE
    small = x.shape[0] * max(plan.in_size, plan.out_size) < policy.fused_min_elements
    if not routed and small and policy.size_floor(x):
        return Path.REFERENCE
    if amx_chosen(plan, x, policy):
        return Path.AMX
    return Path.BMM if native_tables(plan, x, policy) is None else Path.NATIVE
