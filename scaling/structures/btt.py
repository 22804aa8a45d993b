"""Block Tensor-Train (BTT) linear layer with 2 cores and BTT-rank r, and `btt_norm`, its RMS-capped variant.

d_in = m1 * m0 and d_out = n0 * n1 come from `structure.layout` (factorize.py), n0 <= n1 in both:
  paper     (default) the reference code's layout (CBS): the greedy prime split, m0 <= m1. 512 -> 512 reads the
            input as 32 blocks of 16 and writes 16 blocks of 32: r * 24,576 params.
  balanced  the most nearly equal split with the smaller factors as the block counts, m1 <= m0 and n0 <= n1
            (the fewest params: 512 -> 512 is r * 16,384). A strict subset of the paper layout's class at equal
            block sizes; the fan-ins differ too (W0 m0, W1 r * m1), hence the muP multipliers.
Widths without a clean split raise StructureError with the nearest valid widths (no padding), as for `kron` and
`tt`. The input is read as x[i1, i0] (i1 < m1 outer) and the output written as y[j0, j1] (j0 < n0 outer). Cores
are stored in bmm layout (blocks, in, out):
    W0: (m1, m0, n0 * r)   block i1 maps x[i1, :] (m0) -> z[i1, j0, rho]          fan-in m0,     fan-out r * n0
    W1: (n0, m1 * r, n1)   block j0 maps z[:, j0, :] (m1 * r) -> y[j0, :] (n1)     fan-in r * m1, fan-out n1
so  W[(j0, j1), (i1, i0)] = sum_rho W0[i1, i0, j0 * r + rho] * W1[j0, i1 * r + rho, j1]   (y = x W^T),
    params = FLOPs/token / 2 = r * (n0 * d_in + m1 * d_out)          (square d = b^2, r = 1: 2 d^1.5).
Each (i1, j0) block of W is a rank-r (m0 x n1) matrix, so r is capped at min(m0, n1) (beyond it adds nothing).
Rank-1 BTT with m1 = n0 = b blocks is L P^T R, the standard Monarch matrix P L P^T R without its final output
shuffle (monarch.py). `structure.rank` None means r = 1; BTT has exactly 2 cores, so `structure.cores` must be 2.

`btt_norm` rescales each factor in the forward pass (CBS), an RMS cap at the factor's init scale:
    W <- gamma_f * W / max(1, rms(W) / sigma_f),   sigma_f = spectral_std(fan_in_f, fan_out_f),
with one learnable scalar gamma_f per factor (two per layer, initialised to 1). The cap never scales a factor up.
Under QK-LayerNorm the W_Q / W_K layers' gammas are frozen at 1 (`freeze_output_scale`), as CBS drops them: the
normalisation that follows makes them redundant.
Validation: `validate(cfg, d_in, d_out)` resolves the shapes without allocating; `from_config` calls it first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from scaling.config.rules import COUNT, optional
from scaling.config.schema import StructureConfig
from scaling.structures.base import FactorSpec, StructuredLinear, StructureError, register, spectral_std
from scaling.structures.factorize import LAYOUT, clean_factors
from scaling.structures.fastpath.kernels import two_core_apply
from scaling.structures.fastpath.two_core import TwoCorePlan


@dataclass(frozen=True)
class BTTLayout:
    m1: int  # input blocks (first core's batch)
    m0: int  # input features per block
    n0: int  # output blocks (second core's batch)
    n1: int  # output features per block
    rank: int

    @property
    def w0_shape(self) -> tuple[int, int, int]:
        return self.m1, self.m0, self.n0 * self.rank

    @property
    def w1_shape(self) -> tuple[int, int, int]:
        return self.n0, self.m1 * self.rank, self.n1


def block_layout(cfg: StructureConfig, d_in: int, d_out: int, rank: int, structure: str) -> BTTLayout:
    """The BTT blocks of a d_in -> d_out layer under structure.layout (module docstring).

    StructureError names the width and the fix when a side has no clean split.
    """
    small, large = clean_factors(d_in, 2, cfg.layout, structure, "d_in")
    n0, n1 = clean_factors(d_out, 2, cfg.layout, structure, "d_out")
    m1, m0 = (large, small) if cfg.layout == "paper" else (small, large)
    return BTTLayout(m1, m0, n0, n1, rank)


@functools.cache
def btt_plan(m1: int, m0: int, n0: int, n1: int, rank: int) -> TwoCorePlan:
    """BTT: x[i1, i0] -> z[i1, (rho, j0)] (block i1) -> y[j0, j1] (block j0 contracts (i1, rho)).

    Core 1's outputs are ordered (rho, j0), so core 2's operand for block j0, rows (i1, rho), is a strided view.
    """
    return TwoCorePlan(
        d_in=m1 * m0, d_out=n0 * n1,
        in_axes=(m1, m0), in_perm=(0, 1), core1=(m1, rank * n0, m0, 1),
        mid_axes=(m1, rank, n0), mid_perm=(2, 0, 1), core2=(n0, n1, m1 * rank, 1),
        out_axes=(n0, n1), out_perm=(0, 1),
    )


def btt_cores(w0: torch.Tensor, w1: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., b, out, in) views of BTT cores W0 (..., m1, m0, n0 r) and W1 (..., n0, m1 r, n1) for btt_plan (W0 copied
    when r > 1); leading axes (BTT-MoE's experts) are kept."""
    *lead, m1, m0, n0r = w0.shape
    n0 = n0r // rank
    core0 = w0.view(*lead, m1, m0, n0, rank).transpose(-2, -1).reshape(*lead, m1, m0, rank * n0).transpose(-2, -1)
    return core0, w1.transpose(-2, -1)


def btt_apply(x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, layout: BTTLayout) -> torch.Tensor:
    """y = x W^T for the BTT matrix with cores w0, w1 (shapes BTTLayout.w0_shape / w1_shape); x: (..., m1 * m0).

    Runs btt_plan through `kernels.two_core_apply` (the path is paths.select_path's).
    """
    plan = btt_plan(layout.m1, layout.m0, layout.n0, layout.n1, layout.rank)
    return two_core_apply(x, *btt_cores(w0, w1, layout.rank), plan)


@register("btt")
class BlockTensorTrain(StructuredLinear):
    """Two block-diagonal cores with a rank-r transpose between them (see the module docstring for the layout)."""

    settings = {"rank": optional(COUNT), "layout": LAYOUT}  # exactly 2 cores: structure.cores is not a setting

    def __init__(self, d_in: int, d_out: int, layout: BTTLayout, bias: bool = False):
        super().__init__(d_in, d_out, bias)
        self.layout = layout
        self.W0 = nn.Parameter(torch.empty(layout.w0_shape))
        self.W1 = nn.Parameter(torch.empty(layout.w1_shape))

    @classmethod
    def validate(cls, cfg: StructureConfig, d_in: int, d_out: int) -> BTTLayout:
        """Resolve block sizes and rank; StructureError names the width or field to change."""
        name = cls.structure
        if cfg.cores != 2:
            raise StructureError(f"{name} has exactly 2 cores, got structure.cores={cfg.cores}; set structure.cores=2")
        rank = 1 if cfg.rank is None else cfg.rank
        lay = block_layout(cfg, d_in, d_out, rank, name)
        if not 1 <= rank <= min(lay.m0, lay.n1):
            raise StructureError(
                f"{name} structure.rank={rank} must be between 1 and min(m0, n1)={min(lay.m0, lay.n1)} for a "
                f"{d_in} -> {d_out} layer (blocks {lay.m1}x{lay.m0} -> {lay.n0}x{lay.n1}); a higher rank adds nothing"
            )
        return lay

    def factor_specs(self) -> list[FactorSpec]:
        lay = self.layout
        return [
            FactorSpec("W0", lay.w0_shape, lay.m0, lay.rank * lay.n0),
            FactorSpec("W1", lay.w1_shape, lay.rank * lay.m1, lay.n1),
        ]

    def flops_per_token(self) -> int:
        # 2 * r * (n0 * d_in + m1 * d_out)
        return 2 * self.layout.rank * (self.layout.n0 * self.d_in + self.layout.m1 * self.d_out)

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The cores as used in the forward pass."""
        return self.W0, self.W1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = btt_apply(x, *self.weights(), self.layout)
        return y if self.bias is None else y + self.bias


def rms_cap(w: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """w / max(1, rms(w) / sigma_max): scales w down to RMS sigma_max when it is larger, never up.

    Computed as sqrt(max(1, mean(w^2) / sigma_max^2)) so a zero factor (zero-init layers) gets finite gradients:
    sqrt'(0) is infinite, and clamping after it would give 0 * inf = NaN.
    """
    return w / torch.clamp(w.square().mean() / sigma_max**2, min=1.0).sqrt()


class CappedCores:
    """Mixin for a layer with cores W0, W1: btt_norm's RMS cap at the spectral init std and two learnable gammas.

    Put it before the layer class (class X(CappedCores, Layer)) and call add_gammas() in __init__.
    """

    def add_gammas(self) -> None:
        self.gamma0 = nn.Parameter(torch.ones(()))
        self.gamma1 = nn.Parameter(torch.ones(()))

    def reset_parameters(self, stds: dict[str, float] | None = None) -> None:
        super().reset_parameters(stds)  # type: ignore[misc]
        with torch.no_grad():
            self.gamma0.fill_(1.0)
            self.gamma1.fill_(1.0)

    def freeze_output_scale(self) -> None:
        """Fix both gammas at 1 (not trained): a normalisation after this layer makes its output scale redundant."""
        for gamma in (self.gamma0, self.gamma1):
            gamma.requires_grad_(False)

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """gamma_f * rms_cap(W_f, sigma_f), sigma_f the factor's spectral init std."""
        s0, s1 = (spectral_std(spec.fan_in, spec.fan_out) for spec in self.factor_specs())  # type: ignore[attr-defined]
        return self.gamma0 * rms_cap(self.W0, s0), self.gamma1 * rms_cap(self.W1, s1)  # type: ignore[attr-defined]


@register("btt_norm")
class BlockTensorTrainNorm(CappedCores, BlockTensorTrain):
    """BTT whose cores are RMS-capped at their spectral init std and scaled by learnable gammas (CBS `btt_norm`)."""

    def __init__(self, d_in: int, d_out: int, layout: BTTLayout, bias: bool = False):
        super().__init__(d_in, d_out, layout, bias)
        self.add_gammas()
