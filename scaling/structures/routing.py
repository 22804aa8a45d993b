"""Top-k expert routing, shared by the mixtures of experts (btt_moe, and the GPT-2 MoE FFN in models/moe_ffn.py).

Routing (Shazeer et al. 2017; Switch-style balance loss plus the ST-MoE router z-loss), for router logits l (N, E):

    p = softmax(l)                        over all E experts
    top-k experts per token by p;  gate_j = p_j / (sum_{chosen} p + 1e-6)   (= softmax over the k chosen logits)
    aux = E * sum_e P_e f_e + 0.1 * mean_n(logsumexp(l_n)^2)
        P_e = sum_n p_ne / sum_{n,e} p_ne   (normalised summed router probabilities; differentiable)
        f_e = (routed slots of e) / (N k)   (normalised routed counts; not differentiable)

E * sum_e P_e f_e is 1 for perfectly balanced routing and grows as routing concentrates; the z-loss keeps logits
small. The trainer adds structure.aux_weight * aux to the loss. Tokens are dispatched by sorting their (token,
expert) slots by expert, so each expert runs once on a contiguous batch: a Python loop over experts, never tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from scaling.structures.base import StructureError

GATE_EPS = 1e-6
Z_LOSS_WEIGHT = 0.1


@dataclass(frozen=True)
class Routing:
    """Where each token goes: its k experts and their gate weights, plus the router's auxiliary loss."""

    experts: torch.Tensor  # (N, k) expert ids, distinct per token
    gates: torch.Tensor  # (N, k) float32 gate weights
    aux_loss: torch.Tensor  # scalar


def route(logits: torch.Tensor, top_k: int) -> Routing:
    """Top-k routing of router logits (N, E), computed in float32 (formulas in the module docstring)."""
    logits = logits.float()
    n_experts = logits.shape[-1]
    probs = logits.softmax(dim=-1)
    top_p, experts = probs.topk(top_k, dim=-1)
    gates = top_p / (top_p.sum(dim=-1, keepdim=True) + GATE_EPS)
    summed = probs.sum(dim=0)
    importance = summed / summed.sum()
    counts = torch.bincount(experts.reshape(-1), minlength=n_experts).to(probs.dtype)
    load = counts / counts.sum()
    z_loss = torch.logsumexp(logits, dim=-1).square().mean()
    aux = n_experts * (importance * load).sum() + Z_LOSS_WEIGHT * z_loss
    return Routing(experts, gates, aux)


def check_routing_sizes(experts: int, top_k: int, experts_field: str, top_k_field: str) -> None:
    """Validate an (experts, top_k) pair; the error names the config fields and the valid range."""
    if experts < 1:
        raise StructureError(f"{experts_field}={experts} must be >= 1 (the number of experts)")
    if not 1 <= top_k <= experts:
        raise StructureError(
            f"{top_k_field}={top_k} must be between 1 and {experts_field}={experts} (experts used per token)"
        )


def mix_experts(
    x: torch.Tensor, routing: Routing, expert: Callable[[int, torch.Tensor], torch.Tensor], d_out: int
) -> torch.Tensor:
    """y_n = sum_j gate_nj * expert(e_nj, x_n) over token n's k experts e_nj, for x (N, d_in) -> (N, d_out).

    The N*k (token, expert) slots are sorted by expert, so each expert runs once on the contiguous batch of its
    tokens (experts without tokens are skipped), and the gated outputs return with one index_add.
    """
    flat = routing.experts.reshape(-1)
    order = torch.argsort(flat, stable=True)
    tokens = order // routing.experts.shape[-1]  # slot n*k + j belongs to token n
    gates = routing.gates.reshape(-1)[order]
    outs, start = [], 0
    for e, count in enumerate(torch.bincount(flat).tolist()):
        if count:
            outs.append(expert(e, x[tokens[start : start + count]]))
        start += count
    out = torch.cat(outs)
    return out.new_zeros(x.shape[0], d_out).index_add_(0, tokens, out * gates.to(out.dtype)[:, None])
