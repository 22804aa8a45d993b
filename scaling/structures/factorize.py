"""Integer helpers shared by the factorised structures: how a width splits into factors, and padding.

Kronecker, Tensor-Train and BTT reshape a width d into c axes whose sizes multiply to d exactly, split by
`structure.layout`:
  paper     the reference code's greedy prime split (`greedy_factors`): 512 -> (16, 32), 768 -> (16, 48),
            1000 -> (20, 50), 384 -> (16, 24)
  balanced  the most nearly equal split (`near_equal_factors`): 768 -> (24, 32), 1000 -> (25, 40)
Their parameter and FLOP scaling (e.g. 2 d^1.5 MACs for a 2-core Kronecker layer) assumes the axes are of similar
size, so a width whose split is lopsided is rejected with the nearest widths that work.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from scaling.config.rules import one_of
from scaling.config.schema import LAYOUTS  # the names live with the schema
from scaling.structures.base import StructureError

# A factorisation is "clean" when every factor is >= 2 and max factor <= MAX_FACTOR_RATIO * min factor.
# A factor of 1 (prime widths) collapses the structure towards a dense layer; a larger ratio means the
# layer's params/FLOPs no longer follow the d^(1 + 1/c) law the structure is chosen for.
MAX_FACTOR_RATIO = 4
LAYOUT = one_of(*LAYOUTS)  # the range of structure.layout, for the structures that take it


def divisors(n: int) -> list[int]:
    """All positive divisors of n in ascending order (trial division up to sqrt(n))."""
    small = [k for k in range(1, math.isqrt(n) + 1) if n % k == 0]
    return small + [n // k for k in reversed(small) if k * k != n]


def near_equal_factors(n: int, count: int) -> tuple[int, ...]:
    """The `count` integer factors of n (product exactly n), ascending, that are most nearly equal.

    "Most nearly equal" = smallest max/min ratio, ties broken by the smaller largest factor.
    768, 2 -> (24, 32); 768, 3 -> (8, 8, 12); 13, 2 -> (1, 13).
    """
    if n < 1 or count < 1:
        raise ValueError(f"need n >= 1 and count >= 1, got n={n}, count={count}")
    best: tuple[int, ...] | None = None

    def score(t: tuple[int, ...]) -> tuple[float, int]:
        return t[-1] / t[0], t[-1]

    def search(rest: int, left: int, lo: int, prefix: tuple[int, ...]) -> None:
        nonlocal best
        if left == 1:
            if rest >= lo:
                cand = prefix + (rest,)
                if best is None or score(cand) < score(best):
                    best = cand
            return
        for f in divisors(rest):
            if f < lo:
                continue
            if f ** left > rest:  # the remaining factors are >= f, so their product would exceed rest
                break
            search(rest // f, left - 1, f, prefix + (f,))

    search(n, count, 1, ())
    assert best is not None  # (1, ..., 1, n) always qualifies
    return best


def prime_factors(n: int) -> list[int]:
    """The prime factors of n >= 1 with multiplicity, ascending (trial division)."""
    primes, p = [], 2
    while p * p <= n:
        while n % p == 0:
            primes.append(p)
            n //= p
        p += 1
    return primes + ([n] if n > 1 else [])


def greedy_factors(n: int, count: int) -> tuple[int, ...]:
    """The reference code's (CBS `factorize`) split of n into `count` factors, ascending.

    Each prime factor of n, smallest prime first (the order of sympy.factorint), multiplies the currently
    smallest factor (the first of equals): 512, 2 -> (16, 32); 768, 2 -> (16, 48); 384, 3 -> (4, 8, 12).
    """
    if n < 1 or count < 1:
        raise ValueError(f"need n >= 1 and count >= 1, got n={n}, count={count}")
    factors = [1] * count
    for p in prime_factors(n):
        factors[factors.index(min(factors))] *= p
    return tuple(sorted(factors))


def split_width(n: int, count: int, layout: str) -> tuple[int, ...]:
    """n split into `count` ascending factors by `layout` (module docstring); unknown layouts name the field."""
    if layout == "paper":
        return greedy_factors(n, count)
    if layout == "balanced":
        return near_equal_factors(n, count)
    raise StructureError(f"structure.layout={layout!r} is not a layout; choose one of {list(LAYOUTS)}")


def is_clean(factors: tuple[int, ...]) -> bool:
    """True when every factor is >= 2 and the largest is at most MAX_FACTOR_RATIO x the smallest."""
    return factors[0] >= 2 and factors[-1] <= MAX_FACTOR_RATIO * factors[0]


def nearest_valid(n: int, ok: Callable[[int], bool], limit: int = 4096) -> list[int]:
    """The closest width below n and the closest above n for which ok(width) holds (each searched up to `limit`
    away)."""
    below = next((w for w in range(n - 1, max(n - limit, 0), -1) if ok(w)), None)
    above = next((w for w in range(n + 1, n + limit) if ok(w)), None)
    return [w for w in (below, above) if w is not None]


def clean_factors(n: int, count: int, layout: str, structure: str, side: str) -> tuple[int, ...]:
    """split_width(n, count, layout), or StructureError naming the width, the structure and the nearest valid widths.

    `side` names the width in the message, e.g. "d_in" or "d_out".
    """
    factors = split_width(n, count, layout)
    if not is_clean(factors):
        near = nearest_valid(n, lambda w: is_clean(split_width(w, count, layout)))
        others = [other for other in LAYOUTS if other != layout and is_clean(split_width(n, count, other))]
        raise StructureError(
            f"structure.name={structure!r} with structure.layout={layout} cannot factorise {side}={n} into "
            f"{count} factors (it gives {factors}; every factor must be >= 2 and the largest <= "
            f"{MAX_FACTOR_RATIO}x the smallest); use a width such as {' or '.join(map(str, near))}"
            + "".join(f", or structure.layout={other}" for other in others)
            + ", or a different structure for this layer"
        )
    return factors


def ceil_div(a: int, b: int) -> int:
    """ceil(a / b) for positive integers."""
    return -(-a // b)


def pad_last(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad the last dimension of x up to `size` (no copy when it already has that size)."""
    extra = size - x.shape[-1]
    return x if extra == 0 else F.pad(x, (0, extra))
