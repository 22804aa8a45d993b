"""The common interface of every structured linear layer, and the registry that builds them.

A structure maps (..., d_in) -> (..., d_out). It owns its weight *factors*; each factor is a tensor that the
layer applies as a dense map from `fan_in` to `fan_out` features (that is what structure-aware muP needs:
each factor is treated as a dense layer with its own fan-in). FLOPs are forward FLOPs per token, counted as
2 x multiply-accumulates, the convention of torch's FlopCounterMode.

Each structure declares the StructureConfig fields it reads and their ranges (`StructuredLinear.settings`);
`check_settings` checks a run's structure config against that declaration before anything is built.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from scaling.config.rules import Rule, out_of_range
from scaling.config.schema import StructureConfig

# StructureConfig fields that every structure takes: which structure, which layers get it, and the weight of the
# auxiliary loss of routed layers (btt_moe's routers, and the MoE FFN of model.ffn_experts under any structure).
GENERIC_SETTINGS = ("name", "layers", "aux_weight")


class StructureError(ValueError):
    """A structure cannot be built with the given shape or settings; the message says which and how to fix it."""


@dataclass(frozen=True)
class FactorSpec:
    """One weight factor of a structured layer, applied as a dense map fan_in -> fan_out."""

    name: str  # attribute name of the nn.Parameter on the layer
    shape: tuple[int, ...]
    fan_in: int
    fan_out: int


def spectral_std(fan_in: int, fan_out: int) -> float:
    """muP / spectral init std of a dense map: fan_in^-1/2 * min(1, sqrt(fan_out / fan_in))."""
    return fan_in**-0.5 * min(1.0, math.sqrt(fan_out / fan_in))


class StructuredLinear(nn.Module):
    """Base class. Subclasses define factors, the forward pass and the analytic FLOPs."""

    structure: ClassVar[str] = ""  # the registry name, set by @register
    # The StructureConfig fields the structure reads besides GENERIC_SETTINGS, each with its valid range regardless
    # of the layer's widths (validate() checks what depends on them).
    settings: ClassVar[dict[str, Rule]] = {}

    def __init__(self, d_in: int, d_out: int, bias: bool = False):
        super().__init__()
        self.d_in = d_in
        self.d_out = d_out
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None
        self.role = ""  # set by the model's layer factory (q, k, v, attn_out, ffn_up, ffn_down, head, ...)

    # --- what a subclass must provide -------------------------------------------------------------
    def factor_specs(self) -> list[FactorSpec]:
        """Matrix factors in the order they are applied to the input (the last one produces the output)."""
        raise NotImplementedError

    def flops_per_token(self) -> int:
        """Analytic forward FLOPs (2 x MACs) for one input row, bias excluded."""
        raise NotImplementedError

    @classmethod
    def validate(cls, cfg: StructureConfig, d_in: int, d_out: int) -> object:
        """Resolve the shapes of a d_in -> d_out layer from cfg without allocating (the layout __init__ takes);
        raise StructureError naming the width or field and the fix if impossible."""
        raise NotImplementedError

    # --- shared behaviour ---------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: StructureConfig, d_in: int, d_out: int, bias: bool = False) -> StructuredLinear:
        """Build from a StructureConfig through validate: cls(d_in, d_out, layout, bias). Structures whose
        constructor takes more than the layout (Einsum's theta, BTT-MoE's experts) override it."""
        return cls(d_in, d_out, cls.validate(cfg, d_in, d_out), bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def reset_parameters(self, stds: dict[str, float] | None = None) -> None:
        """Initialise each factor N(0, std^2); default std is the factor's spectral std. std 0 zeroes it."""
        if any(p.is_meta for p in self.parameters()):
            return  # shapes only (launch-time planning): nothing to initialise
        with torch.no_grad():
            for spec in self.factor_specs():
                std = spectral_std(spec.fan_in, spec.fan_out) if stds is None else stds[spec.name]
                p = getattr(self, spec.name)
                if std == 0:
                    p.zero_()
                else:
                    p.normal_(0.0, std)
            if self.bias is not None:
                self.bias.zero_()

    def freeze_output_scale(self) -> None:
        """Stop training the layer's learnable output scales (gammas): a normalisation follows it (QK-LayerNorm).

        A no-op for structures without such scales.
        """

    def taxonomy(self) -> dict[str, float]:
        """Coordinates of the layer in a structure taxonomy, recorded in the run summary; {} where none applies
        (Einsum and its subclasses: omega, psi, nu)."""
        return {}

    def aux_loss(self) -> torch.Tensor | None:
        """Auxiliary loss of the last forward pass (routers of mixtures of experts); None for most structures."""
        return None

    def extra_repr(self) -> str:
        return f"{self.d_in} -> {self.d_out}, structure={self.structure}, role={self.role or '-'}"


REGISTRY: dict[str, type[StructuredLinear]] = {}


def register(name: str) -> Callable[[type[StructuredLinear]], type[StructuredLinear]]:
    """Class decorator: make a structure buildable by name."""

    def deco(cls: type[StructuredLinear]) -> type[StructuredLinear]:
        if REGISTRY.get(name, cls) is not cls:
            raise ValueError(f"structure name {name!r} is taken by {REGISTRY[name].__qualname__}; "
                             f"register {cls.__qualname__} under another name")
        cls.structure = name
        REGISTRY[name] = cls
        return cls

    return deco


def structure_class(name: str) -> type[StructuredLinear]:
    """The registered structure `name`; StructureError lists the known ones."""
    if name not in REGISTRY:
        raise StructureError(f"structure.name={name!r} is not a known structure; choose one of {sorted(REGISTRY)}")
    return REGISTRY[name]


def check_settings(cfg: StructureConfig) -> None:
    """Check cfg against its structure's declared settings; StructureError (one line) names the field and the fix.

    A field the structure does not take must keep its StructureConfig default: another value would give an identical
    run a second run id. A value that no structure accepts is reported with the range it must be in.
    """
    cls = structure_class(cfg.name)
    for field in dataclasses.fields(StructureConfig):
        name, value = field.name, getattr(cfg, field.name)
        key = f"structure.{name}"
        if name in cls.settings:
            if not cls.settings[name].ok(value):
                raise StructureError(out_of_range(key, value, cls.settings[name].want, field.default))
        elif name not in GENERIC_SETTINGS and value != field.default:
            rules = {c.settings[name].want: c.settings[name] for c in REGISTRY.values() if name in c.settings}
            if rules and not any(rule.ok(value) for rule in rules.values()):
                raise StructureError(out_of_range(key, value, " or ".join(rules), field.default))
            takes = ", ".join(cls.settings) or "no settings"
            raise StructureError(f"{key}={value} is not a setting of {cfg.name}; {cfg.name} takes {takes}")


def build_linear(cfg: StructureConfig, d_in: int, d_out: int, bias: bool = False) -> StructuredLinear:
    """Build the structure `cfg.name` mapping d_in -> d_out, initialised with its spectral std."""
    layer = structure_class(cfg.name).from_config(cfg, d_in, d_out, bias)
    layer.reset_parameters()
    return layer
