"""Which path a structured layer's call runs: plain ops, the fused bmm schedule, or the compiled offset GEMM.

One frozen `PathPolicy` holds every knob; `select_path(plan, x, policy)` applies it. SCALING_NATIVE is read once,
into DEFAULT_POLICY. A caller (a test, a benchmark) passes its own policy, or scopes one over a block of layer
calls with `use_policy(policy)`; layers call the kernels without one and get `current_policy()`.

    REFERENCE  plain differentiable ops (kernels.reference_apply): other devices, CPU autocast, policy.fused
               off, or a two-core call below fused_min_elements; supports double backward
    BMM        the fused Functions on MKL's batched GEMMs (bmm_schedule.py), any float dtype on the CPU
    NATIVE     the fused Functions on the compiled offset GEMM (token_major.py), float32 only, for plans it runs
               fast (native_tables), and never under a torch dispatch mode (FlopCounterMode cannot see it)
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from scaling.structures.fastpath import native
from scaling.structures.fastpath.token_major import TokenMajorPlan, token_major_plan
from scaling.structures.fastpath.two_core import TwoCorePlan


class Path(enum.Enum):
    REFERENCE = "reference"
    BMM = "bmm"
    NATIVE = "native"


@dataclass(frozen=True)
class PathPolicy:
    """The knobs of path selection (measured defaults; see the comments on each).

    fused: use the fused Functions at all (False: plain ops everywhere).
    native: let the compiled offset GEMM run where it is built (SCALING_NATIVE=0 switches it off).
    fused_min_elements: two-core calls below this many tokens x the wider end run plain ops. There the fused
        Function's fixed cost per call (chunks, scratch buffers, hand-written backward) outweighs the copies it
        saves. Measured fwd+bwd of one layer, plain / fused bmm time: BTT rank 1 0.69-0.92, Monarch 0.71-0.87,
        Einsum 0.47-0.87 below 2^18 (d = 64 x 512 tokens to 256 x 512); 0.75-1.14 from 2^18 up, where the
        compiled path (from 2^19) beats both. In GPT-2 (4 layers, BTT rank 1): 1.3x the tokens/s at d = 64 x 512
        tokens a step, but 0.94-0.97x at d = 128 x 2,048 with the plain path also at 2^18 (so that is where it
        stops).
    native_min_elements: below this (tokens x the wider end) MKL's batched GEMM beats the compiled one on the
        small blocks (inner dimension 16-24), even with the offset tables cached: measured fwd+bwd of BTT rank 1,
        compiled / bmm time, 1.3-1.45 at d = 256 x 1,024 and 2,048 tokens and at 384 x 2,048, 1.05 at
        512 x 1,024, 0.9-1.1 at 512 x 2,048.
    native_max_expansion: the compiled path takes plans whose middle is at most this x the wider end: measured
        fwd+bwd at d = 1024 (OMP_WAIT_POLICY=PASSIVE), vs the bmm path, BTT rank 1 1.35x and Monarch 1.4x
        faster, rank 2 1.1x, but rank 4 1.2x slower (its weight gradients stream 4x wider intermediates).
    native_column_multiple: its micro-kernel holds 8 columns per register, so blocks whose sizes are not
        multiples of this waste part of one on every strip; fwd+bwd of Monarch with 20, 23, 28 and 39 blocks
        (d = 384, 512, 768, 1536) measured 1.3x, 1.0x, 1.0-1.1x and 1.03x the bmm path's time: those stay on bmm.
    native_tile_tokens: the compiled path runs every GEMM of the forward (or backward) on one tile of this many
        tokens before the next; 16 and 32 measured within 5% of each other, 128 10% slower.
    """

    fused: bool = True
    native: bool = True
    fused_min_elements: int = 1 << 18
    native_min_elements: int = 1 << 19
    native_max_expansion: int = 2
    native_column_multiple: int = 8
    native_tile_tokens: int = 16

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> PathPolicy:
        """The defaults, with native off where SCALING_NATIVE is "0"."""
        environ = os.environ if environ is None else environ
        return cls(native=environ.get("SCALING_NATIVE", "1") != "0")

    def fused_usable(self, x: torch.Tensor) -> bool:
        """The fused Functions may take x: enabled, and (uses_fast_path) on the CPU outside autocast."""
        return self.fused and uses_fast_path(x)

    def native_usable(self, x: torch.Tensor) -> bool:
        """The compiled GEMM may take x: enabled and available here, x float32 on the CPU, and no torch dispatch
        mode (FlopCounterMode) watching."""
        return self.native and x.dtype == torch.float32 and x.device.type == "cpu" and native.available() and (
            _get_current_dispatch_mode() is None
        )


DEFAULT_POLICY = PathPolicy.from_environment()
_CURRENT: contextvars.ContextVar[PathPolicy] = contextvars.ContextVar("path_policy", default=DEFAULT_POLICY)


def native_runs() -> bool:
    """The compiled GEMM is built, usable on this CPU and not switched off (SCALING_NATIVE=0, in DEFAULT_POLICY)."""
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
    """The fused Functions are tuned for (and tested on) CPU and run in one dtype; other devices, and CPU
    autocast (train.precision=bf16), take the plain reference path, whose matmuls autocast casts."""
    return x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")


def native_tables(plan: TwoCorePlan, x: torch.Tensor, policy: PathPolicy) -> TokenMajorPlan | None:
    """The offset-GEMM tables of plan when the compiled path runs it on x (N, d_in): native usable, at least
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


def select_path(plan: TwoCorePlan, x: torch.Tensor, policy: PathPolicy, size_floor: bool = True) -> Path:
    """The path of one two-core call on x (N, d_in). size_floor=False skips fused_min_elements: routed experts
    always take the fused Function (their plain alternative is a loop over experts)."""
    if not policy.fused_usable(x):
        return Path.REFERENCE
    if size_floor and x.shape[0] * max(plan.in_size, plan.out_size) < policy.fused_min_elements:
        return Path.REFERENCE
    return Path.BMM if native_tables(plan, x, policy) is None else Path.NATIVE
