"""Vision Transformer: linear patch embedding, class token or mean pooling, pre-LN blocks shared with GPT-2.

An image (C, H, W) is cut into N = (H/p)(W/p) patches of p x p pixels (p = model.patch_size); each flattened
patch (C*p*p values) goes through the `patch_embed` linear layer. With model.pool=cls a learned class token is
prepended (T = N + 1 positions) and read out; with pool=mean the head reads the mean over the N positions.

As in the reference code (CBS), W_Q starts at zero (its last factor, like the out-projections), so attention
starts uniform.

Linear layers in registration order: patch_embed, then blocks.i.attn.{q,k,v,attn_out} and blocks.i.ffn.{ffn_up,
ffn_down} for each block, and last `head`.
"""

from __future__ import annotations

import torch
from torch import nn

from scaling.config.schema import ModelConfig
from scaling.data.interface import DataInfo
from scaling.models.base import EMBED_STD, Model, ModelConfigError
from scaling.models.factory import LayerFactory
from scaling.models.gpt2 import Block

POOLS = ("cls", "mean")


class ViT(Model):
    """Patch embedding + positions, `depth` bidirectional blocks, final LayerNorm, pooling, classification head."""

    zero_init_roles = Model.zero_init_roles | {"q"}
    data_kinds = ("image",)

    def __init__(self, cfg: ModelConfig, info: DataInfo, factory: LayerFactory):
        super().__init__(info)
        if info.kind not in self.data_kinds or len(info.input_shape) != 3:
            raise ModelConfigError(
                f"model.family=vit needs images shaped (C, H, W), got data.kind={info.kind!r} with input shape "
                f"{info.input_shape}; use image data with data.flatten=false"
            )
        if cfg.pool not in POOLS:
            raise ModelConfigError(f"model.pool={cfg.pool!r} is not a pooling; choose one of {list(POOLS)}")
        if info.num_classes < 1:
            raise ModelConfigError(f"model.family=vit needs a number of classes, got {info.num_classes}")
        channels, height, width = info.input_shape
        p = cfg.patch_size
        if p < 1 or height % p or width % p:
            raise ModelConfigError(
                f"model.patch_size={p} does not divide the image size {height}x{width}; choose a divisor of both"
            )
        self.patch_size = p
        self.num_patches = (height // p) * (width // p)
        self.pool = cfg.pool
        self.seq_len = self.num_patches + (1 if cfg.pool == "cls" else 0)
        self.patch_embed = factory("patch_embed", channels * p * p, cfg.width)
        if cfg.pool == "cls":
            self.cls_token = nn.Parameter(torch.empty(1, 1, cfg.width))
            nn.init.normal_(self.cls_token, std=EMBED_STD)
        self.embedding_param_names = ("cls_token", "pos_embed") if cfg.pool == "cls" else ("pos_embed",)
        self.pos_embed = nn.Parameter(torch.empty(1, self.seq_len, cfg.width))
        nn.init.normal_(self.pos_embed, std=EMBED_STD)
        self.blocks = nn.ModuleList(Block(cfg, causal=False, factory=factory) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.head = factory("head", cfg.width, info.num_classes)

    def rows_per_unit(self, name: str) -> int:
        """Per image: the patch embedding sees N patches, the blocks T positions, the head one pooled vector."""
        if name.startswith("patch_embed"):
            return self.num_patches
        if name.startswith("head"):
            return 1
        return self.seq_len

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, C*p*p), patches in row-major order, each flattened channel-major."""
        b, c, h, w = images.shape
        p = self.patch_size
        x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, C, H, W) images; returns class logits (B, classes) and the mean cross-entropy."""
        h = self.patch_embed(self.patches(x))
        if self.pool == "cls":
            h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1)
        h = h + self.pos_embed
        for block in self.blocks:
            h = block(h)
        h = self.ln_f(h)
        pooled = h[:, 0] if self.pool == "cls" else h.mean(dim=1)
        logits = self.head(pooled)
        return logits, None if targets is None else self.loss(logits, targets)

