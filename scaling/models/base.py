"""The `Model` base class every family derives from: forward with loss, auxiliary losses, linear layers."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from scaling.data.interface import DataInfo
from scaling.structures.base import StructuredLinear

LOSSES = ("cross_entropy", "mse")
EMBED_STD = 0.02  # token/positional embeddings and class tokens start at N(0, 0.02^2)


class ModelConfigError(ValueError):
    """A model config that cannot be built; the message names the field and the fix."""


class Model(nn.Module):
    """A model family. Subclasses build their layers through a LayerFactory and implement `forward`.

    `seq_len` is the number of positions attention sees in one example (0 without attention) and
    `units_per_example` the training units one example holds (its tokens for text, 1 otherwise).
    """

    seq_len: int = 0
    units_per_example: int = 1
    data_kinds: tuple[str, ...] = ()  # the data.kind values the family trains on (scaling.models.check_data_kind)
    # Parameters (qualified names) that are embeddings though they are not nn.Embedding modules.
    embedding_param_names: tuple[str, ...] = ()
    # Roles whose last factor starts at zero (scaling.mup.parametrization): the readout and residual out-projections.
    zero_init_roles: frozenset[str] = frozenset({"head", "attn_out", "ffn_down"})

    def __init__(self, info: DataInfo):
        super().__init__()
        if info.loss not in LOSSES:
            raise ModelConfigError(f"data loss {info.loss!r} is not supported; the data must use one of {LOSSES}")
        self.loss_kind = info.loss

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (outputs, mean loss or None); auxiliary losses are not included (see aux_loss)."""
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over all positions (text, images) or mean squared error (regression)."""
        if self.loss_kind == "mse":
            return F.mse_loss(outputs, targets)
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))

    def aux_loss(self) -> torch.Tensor | None:
        """Mean of the auxiliary losses (MoE routers) of the last forward pass over the layers that have one, as
        the reference code averages it (so its weight does not grow with depth); None if no module has one."""
        losses = [
            loss
            for module in self.modules()
            if module is not self and hasattr(module, "aux_loss")
            for loss in [module.aux_loss()]
            if loss is not None
        ]
        return torch.stack(losses).mean() if losses else None

    def linear_layers(self) -> list[tuple[str, StructuredLinear]]:
        """Every StructuredLinear (qualified name, layer) in registration order, not descending into one."""
        return outermost_modules(self, lambda m: isinstance(m, StructuredLinear))

    def rows_per_unit(self, name: str) -> int:
        """How many input rows the module `name` processes per training unit (1 unless a family says otherwise)."""
        return 1

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Token/positional embeddings and class tokens: what `non-embedding` parameter counts leave out."""
        params = [p for m in self.modules() if isinstance(m, nn.Embedding) for p in m.parameters()]
        params += [self.get_parameter(name) for name in self.embedding_param_names]
        return params


def outermost_modules(module: nn.Module, match: Callable[[nn.Module], bool]) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of the submodules that satisfy `match`, in registration order, not looking inside
    them."""
    found: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        if match(child):
            found.append((name, child))
        else:
            found += [(f"{name}.{sub}", m) for sub, m in outermost_modules(child, match)]
    return found
