"""Low-rank linear layer: y = (x U^T) V^T with U: (r, d_in), V: (d_out, r).

The rank r comes from `structure.rank` (absolute) or `structure.rank_frac` (r = ceil(rank_frac * min(d_in, d_out))).
Giving both is an error. Giving neither uses r = ceil(sqrt(min(d_in, d_out))), the CBS default, which keeps the
layer's FLOPs at ~2 d^1.5 MACs in the square case like the other sub-quadratic structures. A rank that is
>= min(d_in, d_out) is rejected: such a layer is a dense layer with extra cost.
Validation: `validate(cfg, d_in, d_out)` resolves the rank without allocating; `from_config` calls it first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from scaling.config.rules import COUNT, fraction, optional
from scaling.config.schema import StructureConfig
from scaling.structures.base import FactorSpec, StructuredLinear, StructureError, register


@dataclass(frozen=True)
class LowRankShape:
    rank: int


@register("low_rank")
class LowRank(StructuredLinear):
    """Two dense factors through an r-dimensional bottleneck; stored like nn.Linear weights so F.linear needs no
    copy."""

    settings = {"rank": optional(COUNT), "rank_frac": optional(fraction(upper_open=True, lower_open=True))}

    def __init__(self, d_in: int, d_out: int, shape: LowRankShape, bias: bool = False):
        super().__init__(d_in, d_out, bias)
        self.rank = rank = shape.rank
        self.U = nn.Parameter(torch.empty(rank, d_in))  # d_in -> r
        self.V = nn.Parameter(torch.empty(d_out, rank))  # r -> d_out

    @classmethod
    def validate(cls, cfg: StructureConfig, d_in: int, d_out: int) -> LowRankShape:
        """Resolve the rank; StructureError names the offending field."""
        limit = min(d_in, d_out)
        if cfg.rank is not None and cfg.rank_frac is not None:
            raise StructureError(
                f"low_rank got both structure.rank={cfg.rank} and structure.rank_frac={cfg.rank_frac}; set only one"
            )
        if cfg.rank is not None:
            rank, field = cfg.rank, f"structure.rank={cfg.rank}"
        elif cfg.rank_frac is not None:
            if not 0 < cfg.rank_frac < 1:
                raise StructureError(
                    f"low_rank needs 0 < structure.rank_frac < 1, got {cfg.rank_frac}; it is the rank as a "
                    "fraction of min(d_in, d_out)"
                )
            rank = math.ceil(cfg.rank_frac * limit)
            field = f"structure.rank_frac={cfg.rank_frac} (rank {rank})"
        else:
            rank = math.ceil(math.sqrt(limit))
            field = f"the default rank ceil(sqrt(min(d_in, d_out)))={rank}"
        if rank < 1:
            raise StructureError(f"low_rank needs a rank >= 1, got structure.rank={rank}")
        if rank >= limit:
            raise StructureError(
                f"low_rank with {field} is not below min(d_in, d_out)={limit} for a {d_in} -> {d_out} layer; "
                f"lower structure.rank / structure.rank_frac or use structure.name='dense' for this layer"
            )
        return LowRankShape(rank)

    def factor_specs(self) -> list[FactorSpec]:
        return [
            FactorSpec("U", tuple(self.U.shape), self.d_in, self.rank),
            FactorSpec("V", tuple(self.V.shape), self.rank, self.d_out),
        ]

    def flops_per_token(self) -> int:
        # 2 * r * (d_in + d_out)
        return 2 * self.rank * (self.d_in + self.d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.U), self.V, self.bias)
