"""Einsum taxonomy: the coordinates (omega, psi, nu) of theta = (alpha, beta, gamma, delta, epsilon, phi, rho).

For a square d x d layer FLOPs grow as d^(1+nu), parameters as d^(1+nu-omega) and rank as d^psi, with

    omega = min(alpha + delta, beta + epsilon) - min(alpha, epsilon)   (parameter sharing)
    psi   = 1 + min(0, 1 + rho - alpha - epsilon)                      (rank)
    nu    = 1 + rho - min(alpha, epsilon)                              (compute per parameter)

Dense is (0, 1, 1); low-rank with rank d^rho is (0, rho, rho); Monarch/BTT-1 (0, 1, 1/2); Kronecker (1/2, 1, 1/2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from analysis.errors import AnalysisError


@dataclass(frozen=True)
class Coordinates:
    omega: float
    psi: float
    nu: float


def coordinates(theta: Sequence[float]) -> Coordinates:
    """(omega, psi, nu) of an einsum theta; a theta of the wrong length raises AnalysisError."""
    if len(theta) != 7:
        raise AnalysisError(f"structure.theta must have 7 entries (alpha, beta, gamma, delta, epsilon, phi, rho); "
                            f"got {list(theta)}")
    alpha, beta, _gamma, delta, epsilon, _phi, rho = (float(t) for t in theta)
    omega = min(alpha + delta, beta + epsilon) - min(alpha, epsilon)
    psi = 1 + min(0.0, 1 + rho - alpha - epsilon)
    nu = 1 + rho - min(alpha, epsilon)
    return Coordinates(omega, psi, nu)

