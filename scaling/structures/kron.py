"""Kronecker-product linear layer: W = A_1 (x) A_2 (x) ... (x) A_c with c = `structure.cores` factors.

d_in = n_1 * ... * n_c and d_out = m_1 * ... * m_c are split into c ascending factors by `structure.layout`
(factorize.py: `paper`, the default, is the reference code's greedy prime split, 1000 -> (20, 50); `balanced` the
most nearly equal one, 1000 -> (25, 40)); widths without a clean split raise StructureError with the nearest
valid widths (no padding), as for `tt`. Factor k is stored
like an nn.Linear weight, A_k: (m_k, n_k), so the dense matrix (y = x W^T) is torch.kron(A_1, ..., A_c).
It is the TT-rank-1 Tensor-Train and is applied by the same contraction (`tt.tt_apply`), core 1 first:
    FLOPs/token = 2 * sum_k (m_1...m_{k-1}) * n_k * m_k * (n_{k+1}...n_c)   (square, 2 cores: 4 d^1.5)
    params = sum_k n_k m_k                                                   (square, 2 cores: 2 d)
Validation: `validate(cfg, d_in, d_out)` resolves the factors without allocating; `from_config` calls it first.
"""

from __future__ import annotations

import torch
from torch import nn

from scaling.config.schema import StructureConfig
from scaling.structures.base import FactorSpec, StructuredLinear, register
from scaling.structures.factorize import LAYOUT, clean_factors
from scaling.structures.tt import CORES, TTLayout, check_cores, tt_apply


@register("kron")
class Kronecker(StructuredLinear):
    """Kronecker product of c small dense factors."""

    settings = {"cores": CORES, "layout": LAYOUT}

    def __init__(self, d_in: int, d_out: int, layout: TTLayout, bias: bool = False):
        super().__init__(d_in, d_out, bias)
        self.layout = layout
        for k, (n, m) in enumerate(zip(layout.in_factors, layout.out_factors)):
            setattr(self, f"factor{k}", nn.Parameter(torch.empty(m, n)))

    @classmethod
    def validate(cls, cfg: StructureConfig, d_in: int, d_out: int) -> TTLayout:
        """Resolve the factor sizes (a rank-1 TT layout); StructureError names the width or field to change."""
        check_cores(cfg.cores, "kron", d_in, d_out)
        ns = clean_factors(d_in, cfg.cores, cfg.layout, "kron", "d_in")
        ms = clean_factors(d_out, cfg.cores, cfg.layout, "kron", "d_out")
        return TTLayout(ns, ms, (1,) * (cfg.cores + 1))

    def factors(self) -> list[torch.Tensor]:
        return [getattr(self, f"factor{k}") for k in range(len(self.layout.in_factors))]

    def factor_specs(self) -> list[FactorSpec]:
        return [
            FactorSpec(f"factor{k}", (m, n), n, m)
            for k, (n, m) in enumerate(zip(self.layout.in_factors, self.layout.out_factors))
        ]

    def flops_per_token(self) -> int:
        return self.layout.flops_per_token()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cores = [a.view(a.shape[0], 1, 1, a.shape[1]) for a in self.factors()]
        y = tt_apply(x, cores, self.layout.in_factors, self.d_out)
        return y if self.bias is None else y + self.bias
