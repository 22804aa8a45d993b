"""Dense linear layer: one factor U of shape (d_out, d_in)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scaling.config.schema import StructureConfig
from scaling.structures.base import FactorSpec, StructuredLinear, register


@register("dense")
class Dense(StructuredLinear):
    """y = x U^T + b, stored like nn.Linear so torch's GEMM reads it without copies."""

    def __init__(self, d_in: int, d_out: int, layout: None = None, bias: bool = False):
        super().__init__(d_in, d_out, bias)
        self.weight = nn.Parameter(torch.empty(d_out, d_in))

    @classmethod
    def validate(cls, cfg: StructureConfig, d_in: int, d_out: int) -> None:
        """Any d_in -> d_out: nothing to resolve."""
        return None

    def factor_specs(self) -> list[FactorSpec]:
        return [FactorSpec("weight", (self.d_out, self.d_in), self.d_in, self.d_out)]

    def flops_per_token(self) -> int:
        return 2 * self.d_in * self.d_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)
