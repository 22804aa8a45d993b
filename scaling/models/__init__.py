"""Model families (GPT-2, ViT, MLP) whose every linear map is a StructuredLinear chosen by role.

    model = build_model(model_cfg, structure_cfg, info)
    logits, loss = model(x, targets)       # loss excludes auxiliary losses
    aux = model.aux_loss()                 # MoE routers' losses of the last forward, or None
    model.linear_layers()                  # [(qualified name, StructuredLinear)] in registration order
"""

from __future__ import annotations

from scaling.config.schema import ModelConfig, StructureConfig
from scaling.data.interface import DataInfo
from scaling.models.base import Model, ModelConfigError
from scaling.models.factory import INPUT_ROLES, ROLES, SELECTORS, LayerFactory, RoleSelection
from scaling.models.gpt2 import GPT2
from scaling.models.mlp import MLP
from scaling.models.vit import ViT

FAMILIES: dict[str, type[Model]] = {"gpt2": GPT2, "vit": ViT, "mlp": MLP}
EXAMPLE_DATA = {"text": "shakespeare", "image": "fashion_mnist", "teacher": "teacher"}  # a data config per kind


def check_data_kind(family: str, kind: str) -> None:
    """model.family takes data of its class's `data_kinds`; ModelConfigError names a data config that fits."""
    kinds = FAMILIES[family].data_kinds
    if kind not in kinds:
        raise ModelConfigError(
            f"model={family} needs {' or '.join(kinds)} data but data.kind={kind!r}; "
            f"use data={EXAMPLE_DATA[kinds[0]]}"
        )


def build_model(model_cfg: ModelConfig, structure_cfg: StructureConfig, info: DataInfo) -> Model:
    """Build model_cfg.family at model_cfg.width with structure_cfg applied to the selected roles."""
    if model_cfg.family not in FAMILIES:
        raise ModelConfigError(f"model.family={model_cfg.family!r} is not known; choose one of {list(FAMILIES)}")
    if model_cfg.width < 1 or model_cfg.depth < 1:
        raise ModelConfigError(
            f"model.width={model_cfg.width} and model.depth={model_cfg.depth} must both be >= 1"
        )
    factory = LayerFactory(structure_cfg, bias=model_cfg.bias)
    model = FAMILIES[model_cfg.family](model_cfg, info, factory)
    registered = [id(layer) for _, layer in model.linear_layers()]
    assert registered == [id(layer) for layer in factory.built], "layers must register in the order they are built"
    _check_input_lr_mult(model_cfg, model)
    return model


def _check_input_lr_mult(cfg: ModelConfig, model: Model) -> None:
    """model.input_lr_mult must be positive and, unless 1, act on an input layer the model has."""
    if not cfg.input_lr_mult > 0:
        raise ModelConfigError(
            f"model.input_lr_mult={cfg.input_lr_mult} must be > 0 (it multiplies the input layer's lr)"
        )
    if cfg.input_lr_mult != 1 and not any(layer.role in INPUT_ROLES for _, layer in model.linear_layers()):
        raise ModelConfigError(
            f"model.input_lr_mult={cfg.input_lr_mult} has no input layer to act on in model.family={cfg.family} "
            f"(roles {sorted(INPUT_ROLES)}; GPT-2's token embedding is a lookup); leave it at 1"
        )


__all__ = [
    "FAMILIES", "GPT2", "INPUT_ROLES", "MLP", "ROLES", "SELECTORS", "LayerFactory", "Model", "ModelConfigError",
    "RoleSelection", "ViT", "build_model", "check_data_kind",
]
