"""Structured linear layers: one module per structure, each registered in REGISTRY by name (`@register`).

Every module of this package is imported here, so a new structure's module registers itself without this file
changing (docs/adding_a_structure.md).
"""

import importlib
import pkgutil

from scaling.structures.base import (
    GENERIC_SETTINGS,
    REGISTRY,
    FactorSpec,
    StructureError,
    StructuredLinear,
    build_linear,
    check_settings,
    register,
    spectral_std,
)


def _discover() -> None:
    """Import every module of this package (each structure's @register runs), then order REGISTRY by name."""
    for module in pkgutil.iter_modules(__path__):
        if not module.ispkg:
            importlib.import_module(f"{__name__}.{module.name}")
    found = sorted(REGISTRY.items())
    REGISTRY.clear()
    REGISTRY.update(found)


_discover()

__all__ = [
    "GENERIC_SETTINGS",
    "REGISTRY",
    "FactorSpec",
    "StructureError",
    "StructuredLinear",
    "build_linear",
    "check_settings",
    "register",
    "spectral_std",
]
