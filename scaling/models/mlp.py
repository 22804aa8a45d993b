"""Pre-LayerNorm residual MLP (the reference's CIFAR MLP and teacher-regression student).

    h = GELU(input(x));  h = h + ffn_down(GELU(ffn_up(LN(h))))  (`depth` times);  out = head(LN(h))

x is an image flattened to C*H*W values (classification, cross-entropy) or a teacher input vector of
info.input_shape[0] values (regression to info.output_dim outputs, mean squared error).

Linear layers in registration order: input, blocks.i.ffn.{ffn_up, ffn_down} for each block, head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from scaling.config.schema import ModelConfig
from scaling.data.interface import DataInfo
from scaling.models.base import Model, ModelConfigError
from scaling.models.factory import LayerFactory
from scaling.models.gpt2 import FFN, ffn_hidden


class MLPBlock(nn.Module):
    """x + FFN(LN(x))."""

    def __init__(self, width: int, hidden: int, bias: bool, factory: LayerFactory):
        super().__init__()
        self.ln = nn.LayerNorm(width, bias=bias)
        self.ffn = FFN(width, hidden, factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(self.ln(x))


class MLP(Model):
    """Input layer + GELU, `depth` residual FFN blocks, final LayerNorm, head."""

    data_kinds = ("image", "teacher")

    def __init__(self, cfg: ModelConfig, info: DataInfo, factory: LayerFactory):
        super().__init__(info)
        if info.kind == "image" and info.num_classes >= 1:
            out_dim = info.num_classes
        elif info.kind == "teacher" and info.output_dim >= 1:
            out_dim = info.output_dim
        else:
            raise ModelConfigError(
                f"model.family=mlp needs image or teacher data with classes/outputs, got data.kind={info.kind!r}"
            )
        in_dim = math.prod(info.input_shape)
        self.input = factory("input", in_dim, cfg.width)
        hidden = ffn_hidden(cfg)
        self.blocks = nn.ModuleList(MLPBlock(cfg.width, hidden, cfg.bias, factory) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.head = factory("head", cfg.width, out_dim)

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, ...) examples, flattened to (B, in_dim); returns (B, outputs) and the mean loss."""
        h = F.gelu(self.input(x.flatten(1)))
        for block in self.blocks:
            h = block(h)
        out = self.head(self.ln_f(h))
        return out, None if targets is None else self.loss(out, targets)
