"""The two-core plan: how a structure's y = x W^T splits into two batched GEMMs with a feature permutation between.

BTT, Monarch and Einsum each map their axes onto a `TwoCorePlan` (their own modules: btt.plan, monarch.plan,
einsum.plan); the kernels only execute plans, on the bmm schedule (bmm_schedule.py) or on the native offset GEMM
(token_major.py), and paths.select_path decides which runs. The plan knows its shapes, its FLOPs and its chunk size.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

# Chunk size: CHUNK_FLOATS / max(d_in, d_out) tokens (4096 at d = 1024), at least MIN_CHUNK_TOKENS. Measured
# fwd+bwd at d = 1024, 4096 tokens: with idle OpenMP threads sleeping (OMP_WAIT_POLICY=PASSIVE), 512-4096 tokens per
# chunk are within 10% of each other, cache-sized chunks slightly ahead (rank 4: within 3%); with the default
# spin-waiting and other processes on the 2 cores every parallel region can stall, and one chunk of 4096 ran 2x
# faster than four of 1024. So chunks are large (few ops per layer) and bound only the scratch buffers' size.
CHUNK_FLOATS = 1 << 22
MIN_CHUNK_TOKENS = 128


def chunk_tokens(d_in: int, d_out: int) -> int:
    """Tokens per chunk of a d_in -> d_out layer: CHUNK_FLOATS over the wider end, at least MIN_CHUNK_TOKENS."""
    return max(MIN_CHUNK_TOKENS, CHUNK_FLOATS // max(d_in, d_out))


def inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    """The inverse permutation."""
    inv = [0] * len(perm)
    for pos, axis in enumerate(perm):
        inv[axis] = pos
    return tuple(inv)


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

    @property
    def mid_size(self) -> int:
        """Width of the intermediate between the cores, b1 p1 c1."""
        b1, p1, _, c1 = self.core1
        return b1 * p1 * c1

    def chunk_tokens(self) -> int:
        """Tokens per chunk on the bmm schedule (module-level chunk_tokens of the padded ends)."""
        return chunk_tokens(self.in_size, self.out_size)

    def flops_per_token(self) -> int:
        """2 x MACs of the two GEMMs: b1 p1 k1 c1 + b2 p2 k2 c2 per token."""
        return 2 * (math.prod(self.core1) + math.prod(self.core2))
