"""Kronecker-product linear layer: W = A_1 (x) A_2 (x) ... (x) A_c with c = `structure.cores` factors.

d_in = n_1 * ... * n_c and d_out = m_1 * ... * m_c are split into c ascending factors by `structure.layout`
(factorize.py: `paper`, the default, is the reference code's greedy prime split, 1000 -> (20, 50); `balanced` the
most nearly equal one, 1000 -> (25, 40)); widths without a clean split raise StructureError with the nearest
valid widths (no padding), as for `tt`. Factor k is stored
like an nn.Linear weight, A_k: (m_k, n_k), so the dense matrix (y = x W^T) is torch.kron(A_1, ..., A_c).
It is the TT-rank-1 Tensor-Train and is applied by the same contraction (`tt.tt_apply`), core 1 first:
    FLOPs/token = 2 * sum_k (m_1...m_{k-1}) * n_k * m_k * (n_{k+1}...n_c)   (square, 2 cores: 4 d^1.5)
    params = sum_k n_k m_k                                                   (square, 2 cores: 2 d)
With 2 factors it is also a two-core plan (`kron_plan`: a BTT of rank 1 whose blocks all share A_2, then A_1, the
output interleaved as Monarch's), which the AMX kernel runs under bf16 autocast (`kernels.two_core_apply`): fwd+bwd
at 4,096 tokens 1.4-1.5x faster than tt_apply's bf16 GEMMs at d = 512 and 1024. Elsewhere tt_apply's own schedule
stays (as fast as the plan on the native GEMM in fp32, 1.7x faster than the plan on bmm). The plan contracts A_2
first, so it is taken only where that costs the analytic FLOPs (n_1 m_2 (n_2 + m_1) = m_1 n_2 (n_1 + m_2), as in
every square layer).
Validation: `validate(cfg, d_in, d_out)` resolves the factors without allocating; `from_config` calls it first.
"""

from __future__ import annotations

import torch
from torch import nn

from scaling.config.schema import StructureConfig
from scaling.structures.base import FactorSpec, StructuredLinear, register
from scaling.structures.factorize import LAYOUT, clean_factors
from scaling.structures.fastpath.kernels import two_core_apply
from scaling.structures.fastpath.paths import Path, current_policy, select_path
from scaling.structures.fastpath.two_core import TwoCorePlan
from scaling.structures.tt import CORES, TTLayout, check_cores, tt_apply


def kron_plan(n1: int, n2: int, m1: int, m2: int) -> TwoCorePlan:
    """A_1 (m1 x n1) (x) A_2 (m2 x n2): x[i1, i2] -> z[i1, j2] (block i1: A_2) -> y[j1, j2] (block j2: A_1), the
    output (j2, j1) interleaved back to (j1, j2)."""
    return TwoCorePlan(
        d_in=n1 * n2, d_out=m1 * m2,
        in_axes=(n1, n2), in_perm=(0, 1), core1=(n1, m2, n2, 1),
        mid_axes=(n1, m2), mid_perm=(1, 0), core2=(m2, m1, n1, 1),
        out_axes=(m2, m1), out_perm=(1, 0),
    )


@register("kron")
class Kronecker(StructuredLinear):
    """Kronecker product of c small dense factors."""

    settings = {"cores": CORES, "layout": LAYOUT}

    def __init__(self, d_in: int, d_out: int, layout: TTLayout, bias: bool = False):
        super().__init__(d_in, d_out, bias)
        self.layout = layout
        for k, (n, m) in enumerate(zip(layout.in_factors, layout.out_factors)):
            setattr(self, f"factor{k}", nn.Parameter(torch.empty(m, n)))
        self.plan = None  # the two-core plan, where it costs the analytic FLOPs (module docstring)
        if len(layout.in_factors) == 2:
            plan = kron_plan(*layout.in_factors, *layout.out_factors)
            self.plan = plan if plan.flops_per_token() == layout.flops_per_token() else None

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
        if self.plan is not None and select_path(self.plan, x.reshape(-1, self.d_in), current_policy()) is Path.AMX:
            (n1, n2), (m1, m2) = self.layout.in_factors, self.layout.out_factors
            a1, a2 = self.factors()
            y = two_core_apply(x, a2.expand(n1, m2, n2), a1.expand(m2, m1, n1), self.plan)
            return y if self.bias is None else y + self.bias
        cores = [a.view(a.shape[0], 1, 1, a.shape[1]) for a in self.factors()]
        y = tt_apply(x, cores, self.layout.in_factors, self.d_out)
        return y if self.bias is None else y + self.bias
