"""Monarch linear layer: y = P L P^T R x (Dao et al. 2022), two block-diagonal factors and the perfect shuffle P.

With b = `structure.blocks` blocks (None: round(sqrt(d_in))), in_blk = ceil(d_in / b), out_blk = ceil(d_out / b)
and mid = min(in_blk, out_blk). Factors are stored in bmm layout (blocks, in, out):
    R: (b, in_blk, mid)    block k maps input features [k*in_blk, (k+1)*in_blk) -> h[k, :]    fan-in in_blk
    L: (b, mid, out_blk)   block l maps g[l, :] -> o[l, :]                                      fan-in mid
    P^T between them:      g[l, r] = h[k, q]  where  k * mid + q = r * b + l   (h read with stride b)
    P at the output:       y[s * b + l] = o[l, s]   (output s of block l lands on feature s * b + l)
the order of the reference code (CBS, HazyResearch's blockdiag_butterfly_multiply). When mid = b (square with
b = sqrt(d)), P^T hands output l of R block k to L block l as its input k: L P^T R is then exactly rank-1 BTT with
m1 = n0 = b (btt.py, whose output block j0 is the contiguous features [j0 * n1, (j0 + 1) * n1)), and Monarch is
that BTT followed by P:  monarch(x)[s * b + l] = btt(x)[l * out_blk + s]  for the same cores (R = W0, L = W1).
Widths that b does not divide are zero-padded (input up to b * in_blk; output features s * b + l >= d_out
dropped), as CBS does; the padding is counted honestly: params = b * mid * (in_blk + out_blk) and
    FLOPs/token = 2 * b * mid * (in_blk + out_blk)            (square, b | d: params 2 d^2 / b, FLOPs 4 d^2 / b).
b must be between 1 and min(d_in, d_out).
Validation: `validate(cfg, d_in, d_out)` resolves the shapes without allocating; `from_config` calls it first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from scaling.config.rules import COUNT, optional
from scaling.config.schema import StructureConfig
from scaling.structures.base import FactorSpec, StructuredLinear, StructureError, register
from scaling.structures.factorize import ceil_div
from scaling.structures.fastpath.kernels import two_core_apply
from scaling.structures.fastpath.two_core import TwoCorePlan


@dataclass(frozen=True)
class MonarchLayout:
    blocks: int
    in_blk: int
    mid: int
    out_blk: int


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


@register("monarch")
class Monarch(StructuredLinear):
    """Block-diagonal R, shuffle P^T, block-diagonal L, shuffle P (see the module docstring for the layout)."""

    settings = {"blocks": optional(COUNT)}

    def __init__(self, d_in: int, d_out: int, layout: MonarchLayout, bias: bool = False):
        super().__init__(d_in, d_out, bias)
        self.layout = layout
        self.R = nn.Parameter(torch.empty(layout.blocks, layout.in_blk, layout.mid))
        self.L = nn.Parameter(torch.empty(layout.blocks, layout.mid, layout.out_blk))

    @classmethod
    def validate(cls, cfg: StructureConfig, d_in: int, d_out: int) -> MonarchLayout:
        """Resolve block sizes; StructureError names structure.blocks when it does not fit the layer."""
        b = round(d_in**0.5) if cfg.blocks is None else cfg.blocks
        if not 1 <= b <= min(d_in, d_out):
            source = (f"structure.blocks={cfg.blocks}" if cfg.blocks is not None
                      else f"the default round(sqrt(d_in))={b}")
            raise StructureError(
                f"monarch {source} must be between 1 and min(d_in, d_out)={min(d_in, d_out)} for a "
                f"{d_in} -> {d_out} layer; set structure.blocks in that range"
            )
        in_blk, out_blk = ceil_div(d_in, b), ceil_div(d_out, b)
        return MonarchLayout(b, in_blk, min(in_blk, out_blk), out_blk)

    def factor_specs(self) -> list[FactorSpec]:
        lay = self.layout
        return [
            FactorSpec("R", (lay.blocks, lay.in_blk, lay.mid), lay.in_blk, lay.mid),
            FactorSpec("L", (lay.blocks, lay.mid, lay.out_blk), lay.mid, lay.out_blk),
        ]

    def flops_per_token(self) -> int:
        lay = self.layout
        return 2 * lay.blocks * lay.mid * (lay.in_blk + lay.out_blk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lay = self.layout
        plan = monarch_plan(self.d_in, self.d_out, lay.blocks, lay.in_blk, lay.mid, lay.out_blk)
        y = two_core_apply(x, self.R.transpose(1, 2), self.L.transpose(1, 2), plan)  # padding handled there
        return y if self.bias is None else y + self.bias
