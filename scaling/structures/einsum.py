"""The Einsum family: every two-core structure y = sum x A B, indexed by theta (Potapczynski et al. 2024).

theta = (alpha, beta, gamma, delta, epsilon, phi, rho) gives each axis its size as a power of the width:

    d_in  = d_alpha * d_beta * d_gamma,   d_x ~ d_in^x    for x in (alpha, beta, gamma)
    d_out = d_delta * d_epsilon * d_phi,  d_x ~ d_out^x   for x in (delta, epsilon, phi)
    d_rho = round(min(d_in, d_out)^rho)   (the rank axis)

Each d_x is d^x rounded down or up so that the side's axes cover the width with the least padding (side_sizes);
the input is zero-padded and the output truncated to the width, and more than 15% padding is an error.

x is viewed as x[gamma, beta, alpha] and the output as y[phi, epsilon, delta], with cores
A[phi, delta, rho, gamma, alpha] and B[phi, epsilon, rho, gamma, beta]:

    y[phi, epsilon, delta] = sum_{alpha, beta, gamma, rho} x[gamma, beta, alpha] A[...] B[...]

alpha / beta are contracted only by A / only by B, gamma is an input axis both cores see, delta / epsilon are
output axes made only by A / only by B, phi is an output axis both see, rho is the rank. Dense, low-rank,
Kronecker, BTT and Monarch without its output shuffle (monarch.py) are points of this space (see the taxonomy
properties omega, psi, nu).

A core with a single element (theta = (1,0,0,1,0,0,0): B is 1 x 1) is a scalar gain, not a factor, as in the
reference code (ES): it starts at 1, trains with lr multiplier 1 and no weight decay, and the other core is the
layer's only factor, so muP gives it the dense multiplier.

`einsum_norm` (every ES GPT run) caps each factor's RMS at its spectral init std in the forward pass,
W <- W / max(1, rms(W) / sigma_f), with no learnable gammas (a scalar gain core is left as it is).

Two choices differ from the reference code, both kept: ES rounds each axis to the nearest integer, which can
undershoot the width (dead outputs, unread inputs), where side_sizes covers it; and ES always contracts A first,
where the layer runs the cheaper order (theta (1/3, 2/3, 0, ...) at 256 -> 1024: 36,771 MACs/token against
45,100).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

from scaling.config.rules import Rule
from scaling.config.schema import StructureConfig
from scaling.structures.base import FactorSpec, StructuredLinear, StructureError, register, spectral_std
from scaling.structures.btt import rms_cap
from scaling.structures.fastpath.kernels import two_core_apply
from scaling.structures.fastpath.two_core import TwoCorePlan
from scaling.structures.taxonomy import Coordinates, coordinates

NAMES = ("alpha", "beta", "gamma", "delta", "epsilon", "phi", "rho")
MAX_PAD = 0.15  # axis sizes may multiply to at most 15% more than the width (the excess is padding)
TOL = 1e-3  # tolerance on the exponent sums (lets a config write 0.333 + 0.333 + 0.334)


def _exponents(value: object) -> bool:
    """Seven numbers in [0, 1]; Theta.parse checks the rest (the sums, redundant and degenerate points)."""
    try:
        return len(value) == 7 and all(0.0 <= float(v) <= 1.0 for v in value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


THETA = Rule(_exponents, f"a list of 7 numbers in [0, 1] ({', '.join(NAMES)}), e.g. [0.5,0,0.5,0,0.5,0.5,0]")


@dataclass(frozen=True)
class Theta:
    """The seven exponents of an Einsum structure, validated on construction."""

    alpha: float
    beta: float
    gamma: float
    delta: float
    epsilon: float
    phi: float
    rho: float

    @classmethod
    def parse(cls, values: object) -> "Theta":
        """Read structure.theta (a list of 7 numbers) and reject invalid, redundant or degenerate points."""
        example = "e.g. structure.theta=[0.5,0,0.5,0,0.5,0.5,0] (BTT rank 1)"
        if values is None:
            raise StructureError(f"structure.theta is required for the einsum structure; {example}")
        try:
            floats = [float(v) for v in values]  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise StructureError(f"structure.theta={values!r} must be a list of 7 numbers; {example}") from None
        if len(floats) != 7:
            raise StructureError(
                f"structure.theta={floats} has {len(floats)} entries; it needs 7: "
                f"({', '.join(NAMES)}); {example}"
            )
        if any(not 0.0 <= v <= 1.0 for v in floats):
            raise StructureError(f"structure.theta={floats}: every exponent must lie in [0, 1]; {example}")
        theta = cls(*floats)
        theta._check_sums()
        theta._check_taxonomy()
        return theta

    def as_list(self) -> list[float]:
        return [getattr(self, name) for name in NAMES]

    def __str__(self) -> str:
        """As a Hydra override value, e.g. [0.5,0,0.5,0,0.5,0.5,0]."""
        return "[" + ",".join(f"{v:g}" for v in self.as_list()) + "]"

    def _check_sums(self) -> None:
        ins, outs = self.alpha + self.beta + self.gamma, self.delta + self.epsilon + self.phi
        if abs(ins - 1) > TOL or abs(outs - 1) > TOL:
            raise StructureError(
                f"structure.theta={self}: alpha+beta+gamma={ins:g} and delta+epsilon+phi={outs:g} "
                "must both be 1 (the axes of each side must multiply to the width)"
            )

    def _check_taxonomy(self) -> None:
        # Redundant: min(alpha, epsilon) < min(beta, delta). Swapping the roles of A and B (alpha<->beta,
        # delta<->epsilon) gives the same structure with A as the core that contracts more.
        if min(self.alpha, self.epsilon) < min(self.beta, self.delta) - 1e-9:
            swapped = Theta(self.beta, self.alpha, self.gamma, self.epsilon, self.delta, self.phi, self.rho)
            raise StructureError(
                f"structure.theta={self} is redundant (min(alpha, epsilon) < min(beta, delta)): it is "
                f"the structure theta={swapped._without_degenerate_rank()} with A and B swapped; use that"
            )
        # Degenerate: rho > min(alpha, epsilon); a rank above d^min(alpha, epsilon) adds cost but no expressivity.
        if self.rho > min(self.alpha, self.epsilon) + 1e-9:
            raise StructureError(
                f"structure.theta={self} is degenerate (rho > min(alpha, epsilon)): its rank adds cost "
                f"but no expressivity; use theta={self._without_degenerate_rank()}"
            )

    def _without_degenerate_rank(self) -> "Theta":
        rho = min(self.rho, self.alpha, self.epsilon)
        return Theta(self.alpha, self.beta, self.gamma, self.delta, self.epsilon, self.phi, rho)


@dataclass(frozen=True)
class AxisSizes:
    """Integer sizes of the seven axes; in_size / out_size may exceed d_in / d_out by padding."""

    alpha: int
    beta: int
    gamma: int
    delta: int
    epsilon: int
    phi: int
    rho: int

    @property
    def in_size(self) -> int:
        return self.alpha * self.beta * self.gamma

    @property
    def out_size(self) -> int:
        return self.delta * self.epsilon * self.phi


def side_sizes(width: int, exponents: tuple[float, float, float]) -> tuple[int, int, int]:
    """Axis sizes of one side: each width^x rounded down or up, the combination with the least padding.

    Among the roundings whose product is >= width (rounding every axis up always is, as the exact powers multiply
    to width), take the smallest product, then the sizes closest to the exact powers. Covering the width, rather
    than truncating the input or padding the output with dead features, keeps every input feature read and every
    output computed; the excess is zero padding of the input, or output rows that are computed and dropped.
    """
    total = sum(exponents)  # 1 up to TOL; normalised so that the exact powers multiply to width
    exact = [width ** (x / total) for x in exponents]
    options = [sorted({max(1, math.floor(p)), math.ceil(p)}) for p in exact]
    covering = [c for c in itertools.product(*options) if math.prod(c) >= width]
    # Distances are rounded so that float noise cannot split exact ties; among those the first candidate wins.
    best = min(covering, key=lambda c: (math.prod(c), round(sum((size - p) ** 2 for size, p in zip(c, exact)), 6)))
    return best[0], best[1], best[2]


def _fits(width: int, exponents: tuple[float, float, float]) -> bool:
    return math.prod(side_sizes(width, exponents)) <= (1 + MAX_PAD) * width


def axis_sizes(theta: Theta, d_in: int, d_out: int) -> AxisSizes:
    """Axis sizes of theta at d_in -> d_out; StructureError if padding would exceed 15% of a side."""
    sides = {
        "d_in": (d_in, (theta.alpha, theta.beta, theta.gamma)),
        "d_out": (d_out, (theta.delta, theta.epsilon, theta.phi)),
    }
    for label, (width, exps) in sides.items():
        if not _fits(width, exps):
            sizes = side_sizes(width, exps)
            near = [w for w in range(max(1, width - 64), width + 65) if _fits(w, exps)]
            suggestion = min(near, key=lambda w: abs(w - width)) if near else None
            raise StructureError(
                f"einsum theta={theta} cannot factor {label}={width}: its axes round at best to {sizes}, whose "
                f"product {math.prod(sizes)} pads the width by more than {MAX_PAD:.0%}; choose another width"
                + (f" (the nearest that works is {label}={suggestion})" if suggestion else "")
                + " or another theta"
            )
    a, b, g = side_sizes(d_in, sides["d_in"][1])
    d, e, f = side_sizes(d_out, sides["d_out"][1])
    rank = max(1, round(min(d_in, d_out) ** theta.rho))
    return AxisSizes(a, b, g, d, e, f, rank)


@functools.cache
def einsum_plan(sizes: tuple[int, ...], d_in: int, d_out: int, a_first: bool) -> TwoCorePlan:
    """Einsum theta with axis sizes (alpha, beta, gamma, delta, epsilon, phi, rho); x[g, b, a] -> y[f, e, d].

    A-first: core 1 (per g) contracts a into (f, d, r), carrying b; core 2 (per f) contracts (r, g, b) into e,
    carrying d. B-first swaps the roles: core 1 contracts b into (f, e, r) carrying a, core 2 (r, g, a) into d.
    """
    a, b, g, d, e, f, r = sizes
    if a_first:  # operand (g | a | b), z axes (g, f, d, r, b) -> (f | r, g, b | d), y axes (f, e, d)
        plan = TwoCorePlan(
            d_in=d_in, d_out=d_out,
            in_axes=(g, b, a), in_perm=(0, 2, 1), core1=(g, f * d * r, a, b),
            mid_axes=(g, f, d, r, b), mid_perm=(1, 3, 0, 4, 2), core2=(f, e, r * g * b, d),
            out_axes=(f, e, d), out_perm=(0, 1, 2),
        )
    else:  # operand (g | b | a), z axes (g, f, e, r, a) -> (f | r, g, a | e), y axes (f, d, e) -> (f, e, d)
        plan = TwoCorePlan(
            d_in=d_in, d_out=d_out,
            in_axes=(g, b, a), in_perm=(0, 1, 2), core1=(g, f * e * r, b, a),
            mid_axes=(g, f, e, r, a), mid_perm=(1, 3, 0, 4, 2), core2=(f, d, r * g * a, e),
            out_axes=(f, d, e), out_perm=(0, 2, 1),
        )
    return plan.without_unit_axes()


def einsum_cores(A: torch.Tensor, B: torch.Tensor, a_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, out, in) views of the einsum cores A[f, d, r, g, a], B[f, e, r, g, b] for einsum_plan (no copies)."""
    f, d, r, g, a = A.shape
    e, b = B.shape[1], B.shape[4]
    if a_first:
        return A.permute(3, 0, 1, 2, 4).reshape(g, f * d * r, a), B.reshape(f, e, r * g * b)
    return B.permute(3, 0, 1, 2, 4).reshape(g, f * e * r, b), A.reshape(f, d, r * g * a)


@register("einsum")
class Einsum(StructuredLinear):
    """y = sum x A B over the axes of theta (module docstring), computed as two pairwise contractions.

    Contraction order. There are three pairwise orders: (x A) B, (x B) A and x (A B). x (A B) forms the full
    d_in x d_out matrix and then costs a dense layer per token. The other two cost, per token,
        (x A) B:  d_in * d_phi d_delta d_rho + d_out * d_rho d_gamma d_beta    MACs
        (x B) A:  d_in * d_phi d_epsilon d_rho + d_out * d_rho d_gamma d_alpha MACs
    and we run the cheaper one (ties: (x A) B, the reference's order; for non-redundant theta (x A) B is never
    worse asymptotically, but (x B) A can be cheaper at a finite width). Both orders run as the fused two-core
    kernel (`einsum_plan`), which moves memory at the two ends (tokens in, tokens out) and, only where the
    strides of the intermediate z do not line up, once more to re-order z: core 1 is a bmm batched over gamma that
    carries the axis it does not contract (beta, or alpha) as extra GEMM columns instead of permuting it, core 2 a
    bmm batched over phi carrying delta (or epsilon), and size-1 axes are dropped, so the special points (BTT,
    Monarch, Kronecker, low-rank) run the same schedule as their named structures.
    The order is a computational choice only: the cores keep the A-first view for muP (factor_specs).
    """

    settings = {"theta": THETA}

    def __init__(self, d_in: int, d_out: int, theta: Theta, bias: bool = False):
        super().__init__(d_in, d_out, bias)
        self.theta = theta
        s = self.sizes = axis_sizes(theta, d_in, d_out)
        self.A = nn.Parameter(torch.empty(s.phi, s.delta, s.rho, s.gamma, s.alpha))
        self.B = nn.Parameter(torch.empty(s.phi, s.epsilon, s.rho, s.gamma, s.beta))
        cost_a, cost_b = self._macs_a_first(), self._macs_b_first()
        self.a_first = cost_a <= cost_b
        self._macs = min(cost_a, cost_b)
        sizes = (s.alpha, s.beta, s.gamma, s.delta, s.epsilon, s.phi, s.rho)
        self.plan = einsum_plan(sizes, d_in, d_out, self.a_first)

    @classmethod
    def validate(cls, cfg: StructureConfig, d_in: int, d_out: int) -> AxisSizes:
        """Resolve the axis sizes without allocating; StructureError names theta or the width to change."""
        return axis_sizes(Theta.parse(cfg.theta), d_in, d_out)

    @classmethod
    def from_config(cls, cfg: StructureConfig, d_in: int, d_out: int, bias: bool = False) -> "Einsum":
        return cls(d_in, d_out, Theta.parse(cfg.theta), bias)  # __init__ sizes the axes before allocating

    # --- taxonomy (square case): FLOPs ~ d^(1+nu), params ~ d^(1+nu-omega), rank ~ d^psi ---------------
    @property
    def coordinates(self) -> Coordinates:
        """(omega, psi, nu) of theta (scaling/structures/taxonomy.py)."""
        return coordinates(*dataclasses.astuple(self.theta))

    @property
    def omega(self) -> float:
        """Parameter sharing."""
        return self.coordinates.omega

    @property
    def psi(self) -> float:
        """Rank exponent."""
        return self.coordinates.psi

    @property
    def nu(self) -> float:
        """Compute exponent."""
        return self.coordinates.nu

    def taxonomy(self) -> dict[str, float]:
        """omega, psi, nu as the run summary records them."""
        return {"omega": float(self.omega), "psi": float(self.psi), "nu": float(self.nu)}

    # --- costs -----------------------------------------------------------------------------------------
    def _macs_a_first(self) -> int:
        s = self.sizes
        return s.in_size * s.phi * s.delta * s.rho + s.out_size * s.rho * s.gamma * s.beta

    def _macs_b_first(self) -> int:
        s = self.sizes
        return s.in_size * s.phi * s.epsilon * s.rho + s.out_size * s.rho * s.gamma * s.alpha

    def flops_per_token(self) -> int:
        """2 x MACs of the contraction order in use, over the padded axis sizes (padding is computed)."""
        return 2 * self._macs

    def factor_specs(self) -> list[FactorSpec]:
        """A is a map d_alpha -> d_delta d_phi d_rho, B a map d_beta d_gamma d_rho -> d_epsilon (bmm0 init).

        A core with one element is a scalar gain (`gains`), not a factor.
        """
        s = self.sizes
        specs = [
            FactorSpec("A", tuple(self.A.shape), s.alpha, s.delta * s.phi * s.rho),
            FactorSpec("B", tuple(self.B.shape), s.beta * s.gamma * s.rho, s.epsilon),
        ]
        return [spec for spec in specs if spec.name not in self.gains()]

    def gains(self) -> tuple[str, ...]:
        """Names of the cores with a single element: scalar gains (module docstring)."""
        return tuple(name for name in ("A", "B") if getattr(self, name).numel() == 1)

    def reset_parameters(self, stds: dict[str, float] | None = None) -> None:
        """Factors at their spectral std (or `stds`), scalar gains at 1."""
        super().reset_parameters(stds)
        if any(p.is_meta for p in self.parameters()):
            return
        with torch.no_grad():
            for name in self.gains():
                getattr(self, name).fill_(1.0)

    def cores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A and B as used in the forward pass."""
        return self.A, self.B

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, theta={self.theta}, sizes={self.sizes}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = two_core_apply(x, *einsum_cores(*self.cores(), self.a_first), self.plan)  # pads / truncates
        return y if self.bias is None else y + self.bias


@register("einsum_norm")
class EinsumNorm(Einsum):
    """Einsum whose factors are RMS-capped at their spectral init std in the forward pass; no gammas (ES)."""

    def cores(self) -> tuple[torch.Tensor, torch.Tensor]:
        caps = {spec.name: spectral_std(spec.fan_in, spec.fan_out) for spec in self.factor_specs()}
        a, b = self.A, self.B
        return (rms_cap(a, caps["A"]) if "A" in caps else a, rms_cap(b, caps["B"]) if "B" in caps else b)
