"""Monarch linear layer: y = L P R x, two block-diagonal factors with the perfect-shuffle permutation P between.

With b = `structure.blocks` blocks (None: round(sqrt(d_in))), in_blk = ceil(d_in / b), out_blk = ceil(d_out / b)
and mid = min(in_blk, out_blk). Factors are stored in bmm layout (blocks, in, out):
    R: (b, in_blk, mid)    block k maps input features [k*in_blk, (k+1)*in_blk) -> h[k, :]    fan-in in_blk
    L: (b, mid, out_blk)   block l maps g[l, :] -> output features [l*out_blk, (l+1)*out_blk)  fan-in mid
P reads h (b, mid) transposed, (mid, b), and cuts it into b chunks of mid: g[l, i] = h[k, q] where
q * b + k = l * mid + i. When mid = b (square with b = sqrt(d)), block l of L sees output l of every R block,
which is rank-1 BTT with m1 = n0 = b.
Widths that b does not divide are zero-padded (input up to b * in_blk, output truncated to d_out), as CBS does;
the padding is counted honestly: params = b * mid * (in_blk + out_blk) and
    FLOPs/token = 2 * b * mid * (in_blk + out_blk)            (square, b | d: params 2 d^2 / b, FLOPs 4 d^2 / b).
b must be between 1 and min(d_in, d_out).
Validation: `validate(cfg, d_in, d_out)` resolves the shapes without allocating; `from_config` calls it first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from scaling.config import StructureConfig
from scaling.structures.base import FactorSpec, StructuredLinear, StructureError, register
from scaling.structures.factorize import ceil_div
from scaling.structures.kernels import monarch_plan, two_core_apply


@dataclass(frozen=True)
class MonarchLayout:
    blocks: int
    in_blk: int
    mid: int
    out_blk: int


@register("monarch")
class Monarch(StructuredLinear):
    """Block-diagonal R, perfect shuffle, block-diagonal L (see the module docstring for the layout)."""

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
            source = f"structure.blocks={cfg.blocks}" if cfg.blocks is not None else f"the default round(sqrt(d_in))={b}"
            raise StructureError(
                f"monarch {source} must be between 1 and min(d_in, d_out)={min(d_in, d_out)} for a "
                f"{d_in} -> {d_out} layer; set structure.blocks in that range"
            )
        in_blk, out_blk = ceil_div(d_in, b), ceil_div(d_out, b)
        return MonarchLayout(b, in_blk, min(in_blk, out_blk), out_blk)

    @classmethod
    def from_config(cls, cfg: StructureConfig, d_in: int, d_out: int, bias: bool = False) -> "Monarch":
        return cls(d_in, d_out, cls.validate(cfg, d_in, d_out), bias)

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
