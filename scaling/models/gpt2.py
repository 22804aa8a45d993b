"""GPT-2 (nanoGPT-like) and the pre-LayerNorm transformer block it shares with the ViT.

Block: x + attn_out(Attention(LN(x))), then x + FFN(LN(x)), FFN = ffn_down(GELU(ffn_up(x))) or a mixture of
whole FFNs (model.ffn_experts > 0). Attention logits are q.k * c / d_head with c = model.attn_scale (muP's 1/d_head,
not 1/sqrt(d_head), so logits stay Theta(1) as the width grows; the papers' code uses c = 8, which equals the
standard 1/sqrt(d_head) at d_head = 64). With model.qk_norm, q and k are LayerNormed per head first, and the
learnable output scales of the q and k layers (btt_norm's gammas) are frozen, as the normalisation makes them
redundant (CBS drops them).

Linear layers in registration order: for each block i, blocks.i.attn.{q,k,v,attn_out}, then blocks.i.ffn.{ffn_up,
ffn_down} (or the experts' layers in MoEFFN's order), and last `head` (absent when model.tie_head reuses the token
embedding). Token and position embeddings are nn.Embedding lookups.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scaling.config.schema import ModelConfig
from scaling.data.interface import DataInfo
from scaling.models.base import EMBED_STD, Model, ModelConfigError
from scaling.models.factory import LayerFactory
from scaling.models.moe_ffn import MoEFFN


def attention_heads(cfg: ModelConfig) -> int:
    """heads = width // head_dim; the width must be a multiple of model.head_dim."""
    if cfg.head_dim < 1 or cfg.width % cfg.head_dim:
        raise ModelConfigError(
            f"model.width={cfg.width} is not a multiple of model.head_dim={cfg.head_dim}; "
            "choose a head_dim that divides the width (heads = width // head_dim)"
        )
    return cfg.width // cfg.head_dim


def attention_scale(cfg: ModelConfig) -> float:
    """model.attn_scale, the c of the logit scale c / d_head; it must be positive."""
    if not cfg.attn_scale > 0:
        raise ModelConfigError(
            f"model.attn_scale={cfg.attn_scale} must be > 0 (logits are q.k * attn_scale / head_dim; "
            "the papers use 8, 1 is plain muP)"
        )
    return float(cfg.attn_scale)


def ffn_hidden(cfg: ModelConfig) -> int:
    """FFN hidden width round(ffn_ratio * width)."""
    hidden = round(cfg.ffn_ratio * cfg.width)
    if hidden < 1:
        raise ModelConfigError(f"model.ffn_ratio={cfg.ffn_ratio} gives an empty FFN; use a ratio > 0")
    return hidden


class AttentionCore(nn.Module):
    """softmax(scale * q k^T [+ causal mask]) v over heads; no parameters.

    `explicit` switches from F.scaled_dot_product_attention to plain matmuls (same result), which FLOP counters can
    see on every device. On the CPU bf16 inputs (bf16 autocast) are attended in fp32 and the result rounded back:
    torch's CPU attention kernels run bf16 3-8x slower than fp32 at context 64 and about 1.1x at 256 (fwd+bwd, 2
    threads, AMX CPU), and fp32 is the more accurate of the two.
    """

    def __init__(self, n_heads: int, head_dim: int, causal: bool, attn_scale: float):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.causal = causal
        self.scale = attn_scale / head_dim  # muP: logits q.k * c / d_head
        self.explicit = False

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            with torch.autocast("cpu", enabled=False):
                return self.attend(q.float(), k.float(), v.float()).to(q.dtype)
        return self.attend(q, k, v)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if not self.explicit:
            return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.scale)
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if self.causal:
            t = q.shape[-2]
            future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        return scores.softmax(dim=-1) @ v


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q, k, v and output maps (each a StructuredLinear)."""

    def __init__(self, cfg: ModelConfig, causal: bool, factory: LayerFactory):
        super().__init__()
        width, n_heads = cfg.width, attention_heads(cfg)
        head_dim = width // n_heads
        self.q = factory("q", width, width)
        self.k = factory("k", width, width)
        self.v = factory("v", width, width)
        self.attn_out = factory("attn_out", width, width)
        self.q_norm = nn.LayerNorm(head_dim, bias=cfg.bias) if cfg.qk_norm else None
        self.k_norm = nn.LayerNorm(head_dim, bias=cfg.bias) if cfg.qk_norm else None
        if cfg.qk_norm:
            self.q.freeze_output_scale()
            self.k.freeze_output_scale()
        self.core = AttentionCore(n_heads, head_dim, causal, attention_scale(cfg))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.core.n_heads
        q, k, v = (proj(x).view(b, t, h, d // h).transpose(1, 2) for proj in (self.q, self.k, self.v))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        y = self.core(q, k, v).transpose(1, 2).reshape(b, t, d)
        return self.attn_out(y)


class FFN(nn.Module):
    """ffn_down(GELU(ffn_up(x)))."""

    def __init__(self, width: int, hidden: int, factory: LayerFactory):
        super().__init__()
        self.ffn_up = factory("ffn_up", width, hidden)
        self.ffn_down = factory("ffn_down", hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_down(F.gelu(self.ffn_up(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block, shared by GPT-2 (causal) and ViT (bidirectional)."""

    def __init__(self, cfg: ModelConfig, causal: bool, factory: LayerFactory):
        super().__init__()
        width, hidden = cfg.width, ffn_hidden(cfg)
        self.ln_attn = nn.LayerNorm(width, bias=cfg.bias)
        self.attn = SelfAttention(cfg, causal, factory)
        self.ln_ffn = nn.LayerNorm(width, bias=cfg.bias)
        if cfg.ffn_experts > 0:
            self.ffn = MoEFFN(width, hidden, cfg.ffn_experts, cfg.ffn_top_k, factory)
        else:
            self.ffn = FFN(width, hidden, factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x))
        return x + self.ffn(self.ln_ffn(x))


class TiedUnembedding(nn.Module):
    """The unembedding of a tied head: logits = x E^T with the token embedding E (no parameters of its own)."""

    role = "head"
    structure = "tied_embedding"

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out

    def flops_per_token(self) -> int:
        return 2 * self.d_in * self.d_out

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return F.linear(x, embedding)


class GPT2(Model):
    """Token + learned position embeddings, `depth` causal blocks, final LayerNorm, head (or tied unembedding)."""

    data_kinds = ("text",)

    def __init__(self, cfg: ModelConfig, info: DataInfo, factory: LayerFactory):
        super().__init__(info)
        if info.kind not in self.data_kinds or info.vocab_size < 1:
            raise ModelConfigError(f"model.family=gpt2 needs text data with a vocabulary, got data.kind={info.kind!r}")
        if cfg.context < 1:
            raise ModelConfigError(f"model.context={cfg.context} must be >= 1")
        self.seq_len = self.units_per_example = cfg.context
        self.wte = nn.Embedding(info.vocab_size, cfg.width)
        self.wpe = nn.Embedding(cfg.context, cfg.width)
        nn.init.normal_(self.wte.weight, std=EMBED_STD)
        nn.init.normal_(self.wpe.weight, std=EMBED_STD)
        self.blocks = nn.ModuleList(Block(cfg, causal=True, factory=factory) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.tie_head = cfg.tie_head
        if cfg.tie_head:
            self.unembed = TiedUnembedding(cfg.width, info.vocab_size)
        else:
            self.head = factory("head", cfg.width, info.vocab_size)

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T) token ids with T <= model.context; returns logits (B, T, vocab) and the mean next-token loss."""
        t = x.shape[1]
        if t > self.seq_len:
            raise ValueError(f"sequence length {t} exceeds model.context={self.seq_len}; raise model.context")
        h = self.wte(x) + self.wpe(torch.arange(t, device=x.device))
        for block in self.blocks:
            h = block(h)
        h = self.ln_f(h)
        logits = self.unembed(h, self.wte.weight) if self.tie_head else self.head(h)
        return logits, None if targets is None else self.loss(logits, targets)
