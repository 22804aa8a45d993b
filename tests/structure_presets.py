"""The conf/structure/<name>.yaml preset of a structure, as a run gets it (shared by the structure tests)."""

from __future__ import annotations

import dataclasses

from omegaconf import OmegaConf

from scaling.config.schema import StructureConfig
from scaling.config.compose import CONF_DIR

PRESETS = CONF_DIR / "structure"


def structure_config(name: str, **overrides) -> StructureConfig:
    """The structure's conf/structure/<name>.yaml defaults (as a run gets them), with overrides."""
    path = PRESETS / f"{name}.yaml"
    node = OmegaConf.merge(OmegaConf.structured(StructureConfig), OmegaConf.load(path) if path.exists() else {})
    return dataclasses.replace(OmegaConf.to_object(node), name=name, **overrides)
