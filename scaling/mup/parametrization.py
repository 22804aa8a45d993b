"""Structure-aware muP: an init std and a learning-rate multiplier for every parameter, and the optimiser built from
them.

Relative to a base model (the same architecture at `model.base_width`), Adam muP gives a dense weight the LR
multiplier d_in_base / d_in and the spectral init std. A structured layer is a product of n_f matrix factors; the
structure-aware rule (Qiu et al. 2024, "compute-better-spent") treats each factor as a dense layer with its own
fan-in and splits the update budget between the factors:

    lr_f = lr * (d_in_base / d_in) * (d_in / fan_in_f) / n_f = lr * d_in_base / (n_f * fan_in_f)
    std_f = spectral_std(fan_in_f, fan_out_f) = fan_in_f^-1/2 * min(1, sqrt(fan_out_f / fan_in_f))

so that the update each factor makes to the layer's output stays Theta(1) as the width grows. Modes:
  structure_aware  the rule above (a dense layer is its n_f = 1, fan_in_f = d_in special case);
  naive            every factor gets the dense multiplier d_in_base / d_in (the ablation whose updates drift);
  standard         no muP: lr multiplier 1 everywhere, factor init std fan_in_f^-1/2.
In every mode the last factor of readout and residual out-projections (roles head, attn_out, ffn_down; a model's
`zero_init_roles`, which for the ViT add q, as in the reference code) starts at zero, MoE routers (a structure's
non-factor matrix, or a plain nn.Linear: the models build every other linear map as a StructuredLinear) are dense
zero-init maps, embeddings and other matrices start at N(0, 0.02^2) with
multiplier 1, and vectors and scalars (norm weights, biases, learnable gammas, a one-element Einsum core) keep
their module's own init, multiplier 1 and no weight decay. `model.input_lr_mult` multiplies the lr of every
parameter of the input layer (roles input, patch_embed), as the reference's `input_lr_mult` (0.1 in its CIFAR
MLP runs, 1 elsewhere).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from scaling.config.schema import PARAMETRIZATIONS, ModelConfig, StructureConfig
from scaling.data.interface import DataInfo
from scaling.models import Model, ModelConfigError, build_model
from scaling.models.base import EMBED_STD, outermost_modules
from scaling.models.factory import INPUT_ROLES
from scaling.structures.base import StructuredLinear, StructureError, spectral_std

MODES = PARAMETRIZATIONS
ZERO_INIT_ROLES = Model.zero_init_roles  # last factor starts at 0 (models may add roles)


@dataclass(frozen=True)
class ParamRule:
    """How one parameter is initialised and trained. init_std None keeps the module's own init (e.g. LayerNorm)."""

    init_std: float | None
    lr_mult: float
    weight_decay: bool


VECTOR_RULE = ParamRule(init_std=None, lr_mult=1.0, weight_decay=False)
EMBED_RULE = ParamRule(init_std=EMBED_STD, lr_mult=1.0, weight_decay=True)


def param_rules(
    model: nn.Module, base_model: nn.Module, mode: str, input_lr_mult: float = 1.0
) -> dict[str, ParamRule]:
    """The rule of every parameter of `model`, keyed by its name in model.named_parameters().

    `base_model` is the same architecture built at the base width (any device, meta is fine); each structured
    layer's base fan-in d_in_base is read from the layer of the same qualified name there. The last factor of
    layers whose role is in the model's `zero_init_roles` starts at zero; every parameter of a layer with an
    input role has its lr multiplier scaled by `input_lr_mult`.
    """
    if mode not in MODES:
        raise ValueError(f"model.parametrization={mode!r} is not a parametrization; choose one of {list(MODES)}")
    names = {id(p): name for name, p in model.named_parameters()}
    rules: dict[str, ParamRule] = {}
    for module_name, layer in outermost_modules(model, lambda m: isinstance(m, (StructuredLinear, nn.Linear))):
        structured = isinstance(layer, StructuredLinear)
        base = _base_layer(base_model, module_name, StructuredLinear if structured else nn.Linear)
        if structured:
            layer_rules = _layer_rules(layer, base.d_in, mode, getattr(model, "zero_init_roles", ZERO_INIT_ROLES))
            if layer.role in INPUT_ROLES:
                layer_rules = {
                    name: dataclasses.replace(rule, lr_mult=rule.lr_mult * input_lr_mult)
                    for name, rule in layer_rules.items()
                }
        else:  # models build every linear map as a StructuredLinear; a plain nn.Linear is a MoE router
            gate = _gate_rule(base.in_features / layer.in_features, mode)
            layer_rules = {name: gate if p.ndim >= 2 else VECTOR_RULE for name, p in layer.named_parameters()}
        for param_name, rule in layer_rules.items():
            rules.setdefault(names[id(layer.get_parameter(param_name))], rule)
    for name, p in model.named_parameters():
        if name not in rules:
            rules[name] = EMBED_RULE if p.ndim >= 2 else VECTOR_RULE
    return rules


def _base_layer(base_model: nn.Module, module_name: str, kind: type[nn.Module]) -> nn.Module:
    """The base model's module of the same qualified name, which must be a `kind` too."""
    try:
        base = base_model.get_submodule(module_name)
    except AttributeError:
        base = None
    if not isinstance(base, kind):
        raise ValueError(
            f"layer {module_name!r} has no {kind.__name__} counterpart in the muP base model; the base model must "
            "be the same architecture built at model.base_width (same depth, layers and structure)"
        )
    return base


def _gate_rule(dense_mult: float, mode: str) -> ParamRule:
    """A router's gate: a dense map from the layer input, zero-initialised so that routing starts uniform."""
    return ParamRule(init_std=0.0, lr_mult=1.0 if mode == "standard" else dense_mult, weight_decay=True)


def _layer_rules(
    layer: StructuredLinear, d_in_base: int, mode: str, zero_init_roles: frozenset[str]
) -> dict[str, ParamRule]:
    """Rules of one structured layer's own parameters, keyed by their names within the layer."""
    specs = layer.factor_specs()
    n_factors = len(specs)
    dense_mult = d_in_base / layer.d_in  # Adam muP: lr ~ 1 / fan_in relative to the base
    rules: dict[str, ParamRule] = {}
    for i, spec in enumerate(specs):
        if mode == "standard":
            lr_mult, std = 1.0, spec.fan_in**-0.5
        elif mode == "naive":
            lr_mult, std = dense_mult, spectral_std(spec.fan_in, spec.fan_out)
        else:  # structure_aware: lr_f = d_in_base / (n_f * fan_in_f)
            lr_mult, std = d_in_base / (n_factors * spec.fan_in), spectral_std(spec.fan_in, spec.fan_out)
        if i == n_factors - 1 and layer.role in zero_init_roles:
            std = 0.0
        rules[spec.name] = ParamRule(init_std=std, lr_mult=lr_mult, weight_decay=True)
    # Matrices that are not factors (btt_moe's router) are gates: dense zero-init maps from the layer input;
    # one-element tensors (a 1 x 1 Einsum core) are scalar gains, like vectors.
    for name, p in layer.named_parameters():
        if name not in rules:
            rules[name] = _gate_rule(dense_mult, mode) if p.ndim >= 2 and p.numel() > 1 else VECTOR_RULE
    return rules


def apply_init(model: nn.Module, rules: dict[str, ParamRule]) -> None:
    """Initialise every parameter from its rule: N(0, init_std^2), zeros for std 0, untouched for None."""
    params = dict(model.named_parameters())
    _check_names(params, rules)
    with torch.no_grad():
        for name, p in params.items():
            std = rules[name].init_std
            if std is None:
                continue
            if std == 0:
                p.zero_()
            else:
                p.normal_(0.0, std)


def build_parametrized_model(
    model_cfg: ModelConfig, structure_cfg: StructureConfig, info: DataInfo
) -> tuple[Model, dict[str, ParamRule]]:
    """Build the model at model_cfg.width, initialised by model_cfg.parametrization; return it with its rules.

    The base model (model_cfg.base_width) only provides shapes, so it is built on the meta device: no memory,
    no compute.
    """
    if model_cfg.parametrization not in MODES:
        raise ValueError(
            f"model.parametrization={model_cfg.parametrization!r} is not a parametrization; choose one of {list(MODES)}"
        )
    base_cfg = dataclasses.replace(model_cfg, width=model_cfg.base_width)
    try:
        with torch.device("meta"):
            base_model = build_model(base_cfg, structure_cfg, info)
    except (StructureError, ModelConfigError) as err:
        raise type(err)(
            f"cannot build the muP base model at model.base_width={model_cfg.base_width}: {err}; "
            "set model.base_width to a width the model and structure accept"
        ) from err
    model = build_model(model_cfg, structure_cfg, info)
    rules = param_rules(model, base_model, model_cfg.parametrization, model_cfg.input_lr_mult)
    apply_init(model, rules)
    return model, rules


def make_optimizer(
    model: nn.Module,
    rules: dict[str, ParamRule],
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
) -> torch.optim.AdamW:
    """AdamW with one param group per distinct (lr_mult, weight_decay) pair.

    Each group carries `lr_mult`; a scheduler sets group["lr"] = lr * schedule(step) * group["lr_mult"].
    Decoupled weight decay (p <- p * (1 - group_lr * weight_decay)) applies only to groups of matrices.
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    _check_names(params, rules)
    grouped: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in params.items():
        rule = rules[name]
        grouped.setdefault((rule.lr_mult, rule.weight_decay), []).append(p)
    groups = [
        {"params": ps, "lr": lr * mult, "lr_mult": mult, "weight_decay": weight_decay if decay else 0.0}
        for (mult, decay), ps in grouped.items()
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)


def _check_names(params: dict[str, nn.Parameter], rules: dict[str, ParamRule]) -> None:
    """Every parameter needs a rule; a missing one means the rules were computed for another model."""
    missing = sorted(set(params) - set(rules))
    if missing:
        raise KeyError(f"no ParamRule for parameters {missing[:5]}; compute rules with param_rules(model, ...)")
