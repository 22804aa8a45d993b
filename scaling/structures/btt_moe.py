"""BTT-MoE: a Block Tensor-Train layer whose E rank slices are experts, each token using its top-k of them.

With the BTT layout of `btt` (x read as x[i1, i0], y written as y[j0, j1]; d_in = m1 m0, d_out = n0 n1, the
blocks chosen by `structure.layout` as for btt), expert e is a rank-1 BTT with cores W0[e]: (m1, m0, n0) and
W1[e]: (n0, m1, n1), and a dense router W_g (d_in -> E) picks k experts per token with gates g (see routing.route):

    z_e[j0, i1] = sum_i0 x[i1, i0] W0[e, i1, i0, j0]
    y[j0, j1]   = sum_{e in top-k} sum_i1 g_e z_e[j0, i1] W1[e, j0, i1, j1]

Summed over all E experts with g = 1 this is a rank-E BTT. The gate multiplies the intermediate z_e; by linearity
of the second core that equals gating the expert's output, which is where it is applied. Only the k routed
experts run per token (tokens are sorted by expert, one pair of bmms per expert; on CPU one fused Function,
`kernels.routed_two_core_apply`, also does the gather, gating and scatter-add), so the forward FLOPs are
router + k/E of the rank-E BTT. Init and learning rates are those of rank-1 BTT: W0 has fan-in m0 and fan-out
n0, W1 fan-in m1 and fan-out n1. The router starts at zero (uniform routing); it is not a factor, so the
parametrisation gives it the dense gate rule.

`btt_moe_norm` is the variant the reference's MoE runs use (ES `btt_norm_moe_para`): the two stacked cores are
RMS-capped at their rank-1 init std and scaled by two learnable gammas per layer, exactly as `btt_norm`
(W <- gamma_f * W / max(1, rms(W) / sigma_f), the RMS over all experts of the core). ES computes every expert and
gates the intermediate; here only the routed experts are computed, which gives the same output.
"""

from __future__ import annotations

import torch
from torch import nn

from scaling.config.rules import COUNT
from scaling.config.schema import StructureConfig
from scaling.structures.base import FactorSpec, StructuredLinear, StructureError, register
from scaling.structures.btt import BTTLayout, CappedCores, block_layout, btt_apply, btt_cores, btt_plan
from scaling.structures.factorize import LAYOUT
from scaling.structures.fastpath.kernels import routed_two_core_apply
from scaling.structures.fastpath.paths import Path, current_policy, select_path
from scaling.structures.routing import Routing, check_routing_sizes, mix_experts, route


@register("btt_moe")
class BTTMoE(StructuredLinear):
    """E rank-1 BTT experts sharing one block layout, mixed per token by a top-k router."""

    settings = {"experts": COUNT, "top_k": COUNT, "layout": LAYOUT}  # its rank is structure.experts, its cores 2

    def __init__(self, d_in: int, d_out: int, layout: BTTLayout, experts: int, top_k: int, bias: bool = False):
        super().__init__(d_in, d_out, bias)
        self.layout = layout  # rank 1: the layout of one expert
        self.top_k = top_k
        self.W0 = nn.Parameter(torch.empty(experts, *layout.w0_shape))  # (E, m1, m0, n0)
        self.W1 = nn.Parameter(torch.empty(experts, *layout.w1_shape))  # (E, n0, m1, n1)
        self.router = nn.Linear(d_in, experts, bias=False)
        self._aux: torch.Tensor | None = None

    @classmethod
    def validate(cls, cfg: StructureConfig, d_in: int, d_out: int) -> BTTLayout:
        """Resolve the block layout of one expert; StructureError names the width or field to change."""
        check_routing_sizes(cfg.experts, cfg.top_k, "structure.experts", "structure.top_k")
        name = cls.structure
        if cfg.rank is not None:
            raise StructureError(
                f"{name} does not use structure.rank={cfg.rank}: its rank slices are the structure.experts="
                f"{cfg.experts} experts, each of rank 1; unset structure.rank (null) and choose structure.experts"
            )
        if cfg.cores != 2:
            raise StructureError(f"{name} has exactly 2 cores, got structure.cores={cfg.cores}; set structure.cores=2")
        return block_layout(cfg, d_in, d_out, 1, name)

    @classmethod
    def from_config(cls, cfg: StructureConfig, d_in: int, d_out: int, bias: bool = False) -> "BTTMoE":
        return cls(d_in, d_out, cls.validate(cfg, d_in, d_out), cfg.experts, cfg.top_k, bias)

    @property
    def num_experts(self) -> int:
        return self.W0.shape[0]

    def factor_specs(self) -> list[FactorSpec]:
        lay = self.layout
        return [
            FactorSpec("W0", tuple(self.W0.shape), lay.m0, lay.n0),
            FactorSpec("W1", tuple(self.W1.shape), lay.m1, lay.n1),
        ]

    def reset_parameters(self, stds: dict[str, float] | None = None) -> None:
        """Factors as rank-1 BTT (base class); the router starts at zero so routing starts uniform."""
        super().reset_parameters(stds)
        with torch.no_grad():
            self.router.weight.zero_()

    def flops_per_token(self) -> int:
        """Router 2 d_in E plus k rank-1 experts, 2 (n0 d_in + m1 d_out) each: k/E of the rank-E BTT."""
        lay = self.layout
        expert = 2 * (lay.n0 * self.d_in + lay.m1 * self.d_out)
        return 2 * self.d_in * self.num_experts + self.top_k * expert

    def aux_loss(self) -> torch.Tensor | None:
        """Load-balancing + z loss of the last forward pass (None before the first)."""
        return self._aux

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stacked expert cores as used in the forward pass."""
        return self.W0, self.W1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.d_in)
        routing = route(self.router(x), self.top_k)
        self._aux = routing.aux_loss
        y = self.mix(x, routing).reshape(*lead, self.d_out)
        return y if self.bias is None else y + self.bias

    @torch.compiler.disable  # each expert's token count is data: under torch.compile this part runs eager
    def mix(self, x: torch.Tensor, routing: Routing) -> torch.Tensor:
        """The routed experts' gated outputs summed per token, x (N, d_in) -> (N, d_out)."""
        lay, policy = self.layout, current_policy()
        plan = btt_plan(lay.m1, lay.m0, lay.n0, lay.n1, 1)
        if select_path(plan, x, policy, routed=True) in (Path.BMM, Path.NATIVE, Path.AMX):
            # one fused Function: gather, the routed experts, gating and scatter-add (CPU; on CUDA each expert's
            # btt_apply below takes the Triton path)
            w0, w1 = btt_cores(*self.weights(), rank=1)  # (E, m1, n0, m0), (E, n0, n1, m1): views
            return routed_two_core_apply(x, w0, w1, plan, routing.experts, routing.gates, policy=policy)
        # unbind, not W0[e]: its backward stacks the experts' gradients once instead of adding E full-size ones
        w0, w1 = (w.unbind(0) for w in self.weights())
        return mix_experts(x, routing, lambda e, tokens: btt_apply(tokens, w0[e], w1[e], self.layout), self.d_out)


@register("btt_moe_norm")
class BTTMoENorm(CappedCores, BTTMoE):
    """BTT-MoE with btt_norm's RMS cap and two learnable gammas (module docstring)."""

    def __init__(self, d_in: int, d_out: int, layout: BTTLayout, experts: int, top_k: int, bias: bool = False):
        super().__init__(d_in, d_out, layout, experts, top_k, bias)
        self.add_gammas()
