"""Range rules: what a valid value of a setting is, as a predicate and in words.

`scaling.config.validate` checks the generic settings of a run with them; each structure declares its own settings
with them (`StructuredLinear.settings`), which `scaling.structures.check_settings` checks for the chosen structure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class Rule:
    ok: Callable[[Any], bool]
    want: str  # what a valid value is, e.g. "an integer >= 1"


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def at_least(lo: float, want: str | None = None) -> Rule:
    return Rule(lambda v: _number(v) and v >= lo, want or f"a finite number >= {lo:g}")


def above(lo: float) -> Rule:
    return Rule(lambda v: _number(v) and v > lo, f"a finite number > {lo:g}")


def integer(lo: int, hi: int) -> Rule:
    """An integer in [lo, hi]: Python's integers are unbounded, so every count has a ceiling far above real use
    that keeps the arithmetic after it (int64 tensors, float64 budgets, memory) from overflowing."""
    return Rule(lambda v: _number(v) and v == int(v) and lo <= v <= hi, f"an integer >= {lo} and <= {hi:_}")


def within(lo: float, hi: float, lo_open: bool = False) -> Rule:
    """A finite number in [lo, hi] (or (lo, hi] with lo_open)."""
    return Rule(lambda v: _number(v) and (v > lo if lo_open else v >= lo) and v <= hi,
                f"a finite number {'>' if lo_open else '>='} {lo:g} and <= {hi:g}")


def list_of(rule: Rule, most: int) -> Rule:
    """A list of at most `most` values, each valid under `rule`."""
    return Rule(lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) <= most
                and all(rule.ok(x) for x in v), f"a list of at most {most} values, each {rule.want}")


def fraction(upper_open: bool = False, lower_open: bool = False) -> Rule:
    lo, hi = "(" if lower_open else "[", ")" if upper_open else "]"
    return Rule(lambda v: _number(v) and (0 < v if lower_open else 0 <= v) and (v < 1 if upper_open else v <= 1),
                f"a number in {lo}0, 1{hi}")


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, "one of " + ", ".join(choices))


def optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.ok(v), f"null or {rule.want}")


COUNT = at_least(1, "an integer >= 1")
NON_NEGATIVE_INT = at_least(0, "an integer >= 0")


def _shown(value: Any) -> str:
    """A value as a user types it: a large float in exponent form where that is exact (1e9 -> 1e+09, not
    1000000000.0); others as Python writes them (1.0, 0.001, 123456789.0)."""
    if isinstance(value, float):
        short = f"{value:g}"
        return short if "e" in short and float(short) == value else repr(value)
    return str(value)


def out_of_range(key: str, value: Any, want: str, default: Any = None) -> str:
    """The one-line message for `key=value` outside its range, with the default as a value that works."""
    hint = f" (the default is {key}={default})" if default is not None else ""
    return f"{key}={_shown(value)} is out of range: it must be {want}{hint}"
