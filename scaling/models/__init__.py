"""Model families (GPT-2, ViT, MLP) whose every linear map is a StructuredLinear chosen by role.

    model = build_model(model_cfg, structure_cfg, info)
    logits, loss = model(x, targets)       # loss excludes auxiliary losses
    aux = model.aux_loss()                 # MoE routers' losses of the last forward, or None
    model.linear_layers()                  # [(qualified name, StructuredLinear)] in registration order
"""

from __future__ import annotations

from scaling.config import ModelConfig, StructureConfig
from scaling.data.base import DataInfo
from scaling.models.base import Model, ModelConfigError
from scaling.models.factory import ROLES, SELECTORS, LayerFactory, RoleSelection
from scaling.models.gpt2 import GPT2
from scaling.models.mlp import MLP
from scaling.models.vit import ViT

FAMILIES: dict[str, type[Model]] = {"gpt2": GPT2, "vit": ViT, "mlp": MLP}


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
    return model


__all__ = [
    "FAMILIES", "GPT2", "MLP", "ROLES", "SELECTORS", "LayerFactory", "Model", "ModelConfigError", "RoleSelection",
    "ViT", "build_model",
]
