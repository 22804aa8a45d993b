"""Structured linear layers: one module per structure, all registered in REGISTRY by name."""

from scaling.structures.base import (
    REGISTRY,
    FactorSpec,
    StructureError,
    StructuredLinear,
    build_linear,
    register,
    spectral_std,
)
from scaling.structures import dense  # noqa: F401  (each import registers its structure)
from scaling.structures import low_rank  # noqa: F401
from scaling.structures import kron  # noqa: F401
from scaling.structures import tt  # noqa: F401
from scaling.structures import monarch  # noqa: F401
from scaling.structures import btt  # noqa: F401
from scaling.structures import einsum  # noqa: F401
from scaling.structures import btt_moe  # noqa: F401

__all__ = [
    "REGISTRY",
    "FactorSpec",
    "StructureError",
    "StructuredLinear",
    "build_linear",
    "register",
    "spectral_std",
]
