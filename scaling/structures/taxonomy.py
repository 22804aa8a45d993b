"""Einsum taxonomy: the coordinates (omega, psi, nu) of theta = (alpha, beta, gamma, delta, epsilon, phi, rho).

For a square d x d layer FLOPs grow as d^(1+nu), parameters as d^(1+nu-omega) and rank as d^psi, with

    omega = min(alpha + delta, beta + epsilon) - min(alpha, epsilon)   (parameter sharing)
    psi   = 1 + min(0, 1 + rho - alpha - epsilon)                      (rank)
    nu    = 1 + rho - min(alpha, epsilon)                              (compute per parameter)

Dense is (0, 1, 1); low-rank with rank d^rho is (0, rho, rho); Monarch/BTT-1 (0, 1, 1/2); Kronecker (1/2, 1, 1/2).
The Einsum structure (structures/einsum.py) and the analysis (analysis/fit/taxonomy.py) both read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Coordinates:
    omega: float
    psi: float
    nu: float


def coordinates(
    alpha: float, beta: float, gamma: float, delta: float, epsilon: float, phi: float, rho: float
) -> Coordinates:
    """(omega, psi, nu) of theta (module docstring); gamma and phi do not enter."""
    omega = min(alpha + delta, beta + epsilon) - min(alpha, epsilon)
    psi = 1 + min(0.0, 1 + rho - alpha - epsilon)
    nu = 1 + rho - min(alpha, epsilon)
    return Coordinates(omega, psi, nu)
