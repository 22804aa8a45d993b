"""The standard mixture of experts of whole FFNs for GPT-2 (model.ffn_experts): a router and E FFN experts,
routed top-k by scaling/structures/routing.py (whose docstring gives the routing and its auxiliary loss)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from scaling.structures.base import StructuredLinear
from scaling.structures.routing import check_routing_sizes, mix_experts, route

LinearFactory = Callable[[str, int, int], StructuredLinear]


class FFNExpert(nn.Module):
    """One expert: ffn_down(GELU(ffn_up(x))), its maps built by the model's layer factory."""

    def __init__(self, d: int, hidden: int, linear_factory: LinearFactory):
        super().__init__()
        self.ffn_up = linear_factory("ffn_up", d, hidden)
        self.ffn_down = linear_factory("ffn_down", hidden, d)

    def flops_per_token(self) -> int:
        return self.ffn_up.flops_per_token() + self.ffn_down.flops_per_token()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_down(F.gelu(self.ffn_up(x)))


class MoEFFN(nn.Module):
    """A mixture of `experts` whole FFNs (d -> hidden -> d); each token runs through its top_k of them.

    y = sum_{j in top-k} gate_j * FFN_j(x). The router is a dense zero-initialised map d -> experts (so routing
    starts uniform); the experts' maps are StructuredLinear layers (roles ffn_up / ffn_down) from
    `linear_factory`, so the parametrisation gives them muP init and learning rates like any FFN.
    """

    def __init__(self, d: int, hidden: int, experts: int, top_k: int, linear_factory: LinearFactory):
        super().__init__()
        check_routing_sizes(experts, top_k, "model.ffn_experts", "model.ffn_top_k")
        self.d_in = self.d_out = d
        self.top_k = top_k
        self.router = nn.Linear(d, experts, bias=False)
        nn.init.zeros_(self.router.weight)
        self.experts = nn.ModuleList(FFNExpert(d, hidden, linear_factory) for _ in range(experts))
        self._aux: torch.Tensor | None = None

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def flops_per_token(self) -> int:
        """Router (2 d E) plus the k experts a token uses: k/E of the FLOPs of all experts."""
        experts = sum(expert.flops_per_token() for expert in self.experts)
        return 2 * self.d_in * self.num_experts + self.top_k * experts // self.num_experts

    def aux_loss(self) -> torch.Tensor | None:
        """Load-balancing + z loss of the last forward pass (None before the first)."""
        return self._aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.d_in)
        routing = route(self.router(x), self.top_k)
        self._aux = routing.aux_loss
        y = mix_experts(x, routing, lambda e, tokens: self.experts[e](tokens), self.d_out)
        return y.reshape(*lead, self.d_out)
