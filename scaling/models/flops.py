"""FLOPs and parameters of a whole model: analytic (from each layer's structure) and measured (torch's counter).

Convention (analytic, `model_flops`): forward FLOPs per training unit -- per token for text, per example for
images and regression -- counting 2 FLOPs per multiply-accumulate, as torch's FlopCounterMode does:
  * every linear layer (any structure): rows x layer.flops_per_token(), bias adds not counted. `rows` is how many
    input rows the layer sees per unit: 1 for GPT-2 and the MLP; for the ViT N patches (patch embedding),
    T positions (blocks) and 1 pooled vector (head), per image. Mixtures of experts count their router and the
    top-k experts a token actually uses (their own flops_per_token()).
  * attention scores q k^T and the weighted sum of values: 2 * 2 * T * d_attn per position per layer for a full
    T x T attention (d_attn = heads * head_dim, T = the sequence length). The causal mask is NOT discounted
    (the usual convention: PaLM/nanoGPT 12 L T d per token for training; torch's counter does the same).
    Softmax, LayerNorm, GELU and other elementwise work are not counted.
  * embeddings: 0 (lookups); the unembedding/head is a linear layer (a tied head counts 2 d V per token).
  * training FLOPs per unit = 3 x forward (backward = 2 x forward).
Parameters: `params` counts every tensor once (a tied head shares the embedding); `params_nonembed` leaves out
token/positional embeddings and class tokens.

Measured (`measure_flops`): one real forward pass of one example under FlopCounterMode, per module. On CPU the
counter sees 0 FLOPs in F.scaled_dot_product_attention (torch 2.13), so attention is run as explicit matmuls
(AttentionCore.explicit) while measuring, which the counter sees on every device.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from scaling.data.interface import DataInfo
from scaling.models.base import Model, outermost_modules
from scaling.models.gpt2 import AttentionCore
from scaling.structures.base import StructuredLinear


@dataclass(frozen=True)
class LayerCount:
    """One compute unit: a StructuredLinear, a mixture of experts or a tied unembedding."""

    name: str
    role: str
    structure: str
    d_in: int
    d_out: int
    params: int
    rows: int  # input rows per training unit
    flops: int  # forward FLOPs per training unit = rows * flops_per_token()


@dataclass(frozen=True)
class AttentionCount:
    """The parameter-free part of one attention layer: scores and weighted values."""

    name: str
    seq_len: int
    d_attn: int
    rows: int  # positions per training unit
    flops: int  # rows * 2 * 2 * seq_len * d_attn


@dataclass(frozen=True)
class FlopReport:
    """Analytic accounting of one model; FLOPs are forward FLOPs per training unit (`unit`)."""

    unit: str
    params: int
    params_nonembed: int
    layers: list[LayerCount]
    attention: list[AttentionCount]

    @property
    def linear_flops_per_unit(self) -> int:
        return sum(layer.flops for layer in self.layers)

    @property
    def attention_flops_per_unit(self) -> int:
        return sum(a.flops for a in self.attention)

    @property
    def forward_flops_per_unit(self) -> int:
        return self.linear_flops_per_unit + self.attention_flops_per_unit

    @property
    def train_flops_per_unit(self) -> int:
        return training_flops(self.forward_flops_per_unit)


def training_flops(forward_flops: float) -> float:
    """FLOPs of one training pass over what costs forward_flops forward: forward + backward (input and weight
    gradients, 2 x forward) = 3 x forward."""
    return 3 * forward_flops


def is_compute_unit(module: nn.Module) -> bool:
    """A module whose FLOPs are its flops_per_token(): structured layers, MoE FFNs, tied unembeddings."""
    return isinstance(module, StructuredLinear) or callable(getattr(module, "flops_per_token", None))


def compute_units(model: Model) -> list[tuple[str, nn.Module]]:
    """The outermost compute units of a model, in registration order (layers inside an MoE count via the MoE)."""
    return outermost_modules(model, is_compute_unit)


def attention_cores(model: Model) -> list[tuple[str, AttentionCore]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AttentionCore)]


def param_counts(model: Model) -> tuple[int, int]:
    """(total, non-embedding) parameter counts; shared tensors are counted once."""
    total = sum(p.numel() for p in model.parameters())
    embed = sum(p.numel() for p in {id(p): p for p in model.embedding_parameters()}.values())
    return total, total - embed


def model_flops(model: Model, info: DataInfo, context: int | None = None) -> FlopReport:
    """Analytic params and forward FLOPs per unit (see the module docstring); works on meta-device models.

    `context` is the sequence length attention is counted at for text models (default: the model's context).
    """
    seq_len = context if (context is not None and info.unit == "token") else model.seq_len
    layers = []
    for name, unit in compute_units(model):
        rows = model.rows_per_unit(name)
        layers.append(
            LayerCount(
                name=name,
                role=getattr(unit, "role", ""),
                structure=getattr(unit, "structure", type(unit).__name__),
                d_in=getattr(unit, "d_in", 0),
                d_out=getattr(unit, "d_out", 0),
                params=sum(p.numel() for p in unit.parameters()),
                rows=rows,
                flops=rows * int(unit.flops_per_token()),
            )
        )
    attention = []
    for name, core in attention_cores(model):
        rows, d_attn = model.rows_per_unit(name), core.n_heads * core.head_dim
        # scores q k^T: 2 T d_attn per position; values p v: 2 T d_attn per position
        attention.append(AttentionCount(name, seq_len, d_attn, rows, rows * 2 * 2 * seq_len * d_attn))
    total, nonembed = param_counts(model)
    return FlopReport(unit=info.unit, params=total, params_nonembed=nonembed, layers=layers, attention=attention)


@dataclass(frozen=True)
class MeasuredFlops:
    """FlopCounterMode's counts of one forward pass, per training unit, by compute unit and attention core."""

    unit: str
    total: float  # everything the counter saw
    layers: dict[str, float]  # compute unit name -> FLOPs per unit
    attention: dict[str, float]  # attention core name -> FLOPs per unit

    @property
    def linear_flops_per_unit(self) -> float:
        return sum(self.layers.values())

    @property
    def attention_flops_per_unit(self) -> float:
        return sum(self.attention.values())


def example_batch(model: Model, info: DataInfo) -> torch.Tensor:
    """One random example of the model's input: a full-context token sequence, an image or a teacher input."""
    device = next(model.parameters()).device
    if info.kind == "text":
        return torch.randint(0, info.vocab_size, (1, model.seq_len), device=device)
    return torch.randn(1, *info.input_shape, device=device)


@contextmanager
def explicit_attention(model: Model) -> Iterator[None]:
    """Run every attention core as explicit matmuls inside the block (restored afterwards)."""
    cores = [core for _, core in attention_cores(model)]
    previous = [core.explicit for core in cores]
    for core in cores:
        core.explicit = True
    try:
        yield
    finally:
        for core, flag in zip(cores, previous):
            core.explicit = flag


def measure_flops(model: Model, info: DataInfo) -> MeasuredFlops:
    """Count one forward pass of one example with FlopCounterMode (attention as explicit matmuls)."""
    if any(p.is_meta for p in model.parameters()):
        raise ValueError("measure_flops needs a model with real weights, not one built on the meta device")
    x = example_batch(model, info)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), explicit_attention(model), counter:
        model(x)
    counts = counter.get_flop_counts()
    root = type(model).__name__

    def per_unit(name: str) -> float:
        return sum(counts.get(f"{root}.{name}", {}).values()) / model.units_per_example

    return MeasuredFlops(
        unit=info.unit,
        total=counter.get_total_flops() / model.units_per_example,
        layers={name: per_unit(name) for name, _ in compute_units(model)},
        attention={name: per_unit(name) for name, _ in attention_cores(model)},
    )
