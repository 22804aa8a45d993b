"""Einsum taxonomy coordinates of a run's structure.theta (the formulas live in scaling/structures/taxonomy.py).

Dense is (0, 1, 1); low-rank with rank d^rho is (0, rho, rho); Monarch/BTT-1 (0, 1, 1/2); Kronecker (1/2, 1, 1/2).
"""

from __future__ import annotations

from typing import Sequence

from analysis.errors import AnalysisError
from scaling.structures.taxonomy import Coordinates
from scaling.structures.taxonomy import coordinates as theta_coordinates

__all__ = ["Coordinates", "coordinates"]


def coordinates(theta: Sequence[float]) -> Coordinates:
    """(omega, psi, nu) of an einsum theta; a theta of the wrong length raises AnalysisError."""
    if len(theta) != 7:
        raise AnalysisError(f"structure.theta must have 7 entries (alpha, beta, gamma, delta, epsilon, phi, rho); "
                            f"got {list(theta)}")
    return theta_coordinates(*(float(t) for t in theta))
