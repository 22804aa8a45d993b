"""Range rules: what a valid value of a setting is, as a predicate and in words.

`scaling.config.validate` checks the generic settings of a run with them; each structure declares its own settings
with them (`StructuredLinear.settings`), which `scaling.structures.check_settings` checks for the chosen structure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable


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


def out_of_range(key: str, value: Any, want: str, default: Any = None) -> str:
    """The one-line message for `key=value` outside its range, with the default as a value that works."""
    hint = f" (the default is {key}={default})" if default is not None else ""
    return f"{key}={value} is out of range: it must be {want}{hint}"
