"""Search files (`searches/NAME.yaml`): what a structure search compares, at which budget, with how much compute.

    name, description
    base:        run overrides of every run: the model family and data, e.g. [model=gpt2, data=shakespeare, ...];
                 train.schedule=constant (each run is read at 1/4, 1/2 and all of its round's budget)
    budget:      C, the training FLOPs the winner is measured at (the last round's budget)
    allowance:   training FLOPs the whole search may spend, dense's runs and the LR check included
    reference:   the dense baseline's overrides (label `dense`), e.g. [structure=dense, train.lr=0.006]
    structures:  named candidates, label -> overrides, e.g. {btt: [structure=btt, structure.rank=1]}
    theta:       Einsum candidates, label -> theta (alpha, beta, gamma, delta, epsilon, phi, rho); each runs as
                 `structure=einsum structure.theta=[...]` plus `theta_overrides`
    theta_overrides: overrides of every theta candidate (e.g. its train.lr)
    rounds:      [{fraction: 0.25, keep: 0.5, seeds: 1}, ..., {fraction: 1.0, seeds: 2}]: round budgets as
                 fractions of C, increasing, the last 1.0; `keep` the fraction that advances (ties with the best
                 advance too); `seeds` runs per size
    sizes:       widths per candidate and round, around its predicted compute-optimal size (default 4)
    tokens_per_param: the FLOP-formula guess of N* before a candidate has runs: N* = sqrt(C / (6 r)) (default 20)
    lr_check:    {values: [3 learning rates], labels: [...] or all}: each listed candidate (or `dense`, the
                 baseline) trains at each value (one size, the first round's budget) and keeps the best; the other
                 theta points inherit the LR of their nearest checked neighbour in (omega, psi, nu); named ones and
                 an unchecked dense keep their own. `all` checks every candidate and dense
    replicates:  bootstrap replicates of each round's pooled fit (default 200)
Found like sweep files: `search_dir=PATH` folders first, then the searches shipped with the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from analysis.errors import AnalysisError
from analysis.search.decide import Stage
from scaling.config.compose import SweepPathError, load_sweep_file, resource_dir
from scaling.launch.sweeps import SweepError, check_name
from scaling.structures.taxonomy import coordinates

SEARCHES_DIR = resource_dir("analysis.search_files", "searches")
DENSE = "dense"
KEYS = ("name", "description", "base", "budget", "allowance", "reference", "structures", "theta", "theta_overrides",
        "rounds", "sizes", "tokens_per_param", "lr_check", "replicates")
ROUND_KEYS = ("fraction", "keep", "seeds")
READS = (0.25, 0.5, 1.0)  # each run is read at these fractions of its round's budget (constant-LR curves)


class SearchError(AnalysisError):
    """A search file that cannot run; the message names the field and the fix."""


@dataclass(frozen=True)
class Candidate:
    label: str
    overrides: list[str]
    theta: tuple[float, ...] | None = None

    @property
    def coords(self) -> tuple[float, float, float] | None:
        if self.theta is None:
            return None
        c = coordinates(*self.theta)
        return (c.omega, c.psi, c.nu)


@dataclass(frozen=True)
class SearchSpec:
    name: str
    description: str
    base: list[str]
    budget: float
    allowance: float
    reference: list[str]
    candidates: list[Candidate]
    stages: list[Stage]
    sizes: int = 4
    tokens_per_param: float = 20.0
    lr_values: list[float] = field(default_factory=list)
    lr_labels: list[str] = field(default_factory=list)
    replicates: int = 200
    path: Path | None = None

    def candidate(self, label: str) -> Candidate:
        return next(c for c in self.candidates if c.label == label)

    def cost(self, stage: Stage, n: int) -> float:
        """Training FLOPs of a round for n candidates and dense: every run trains to the round's budget."""
        return (n + 1) * self.sizes * stage.seeds * stage.flops

    @property
    def lr_cost(self) -> float:
        return len(self.lr_labels) * len(self.lr_values) * self.stages[0].flops

    def full_grid(self) -> float:
        """The equivalent full grid: every candidate at every round's budget and sizes, and the LR check of every
        candidate and dense."""
        return sum(self.cost(s, len(self.candidates)) for s in self.stages) + \
            (len(self.candidates) + 1) * len(self.lr_values) * self.stages[0].flops


def search_dirs(extra: Sequence[str] = ()) -> list[Path]:
    for d in extra:
        if not Path(d).is_dir():
            raise SearchError(f"search_dir={d}: no such folder; give a folder of search YAML files", "search_dir")
    return [*(Path(d).resolve() for d in extra), SEARCHES_DIR]


def search_files(extra: Sequence[str] = ()) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in reversed(search_dirs(extra)):
        if folder.is_dir():
            found |= {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in (".yaml", ".yml")}
    return dict(sorted(found.items()))


def find_search(name: str, extra: Sequence[str] = ()) -> Path:
    if name.endswith((".yaml", ".yml")):
        return Path(name)
    files = search_files(extra)
    if name not in files:
        raise SearchError(f"+search={name}: no such search; the known ones are {sorted(files)} (or pass a path to a "
                          "search YAML file, or its folder as search_dir=DIR)", "search")
    return files[name]


def _overrides(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SearchError(f"{where}: must be a list of override strings, e.g. [structure=btt]")
    return list(value)


def _positive(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise SearchError(f"{where}={value!r}: must be a positive number, e.g. 3.2e11")
    return float(value)


def _count(where: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SearchError(f"{where}={value!r}: must be an integer of at least {low}")
    return value


def _stages(where: str, rounds: Any, budget: float) -> list[Stage]:
    if not isinstance(rounds, list) or not rounds:
        raise SearchError(f"{where}.rounds: must be a list of rounds, e.g. [{{fraction: 0.25, keep: 0.5}}, "
                          "{fraction: 1.0, seeds: 2}]")
    stages, previous = [], 0.0
    for i, r in enumerate(rounds):
        at = f"{where}.rounds[{i}]"
        if not isinstance(r, dict) or set(r) - set(ROUND_KEYS) or "fraction" not in r:
            raise SearchError(f"{at}: must be a mapping with `fraction` and optionally `keep`, `seeds`; got {r!r}")
        fraction = _positive(f"{at}.fraction", r["fraction"])
        if fraction <= previous or fraction > 1:
            raise SearchError(f"{at}.fraction={fraction:g}: round budgets must increase and end at 1.0 (= budget)")
        keep = _positive(f"{at}.keep", r.get("keep", 0.5))
        if keep > 1:
            raise SearchError(f"{at}.keep={keep:g}: the fraction that advances lies in (0, 1]")
        stages.append(Stage(fraction * budget, keep, _count(f"{at}.seeds", r.get("seeds", 1), 1)))
        previous = fraction
    if previous != 1.0:
        raise SearchError(f"{where}.rounds: the last round's fraction is {previous:g}; end at fraction 1.0 so the "
                          "winner is measured at the budget")
    return stages


def _theta(where: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != 7 or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise SearchError(f"{where}={value!r}: theta is 7 numbers (alpha, beta, gamma, delta, epsilon, phi, rho)")
    return tuple(float(v) for v in value)


def parse(spec: dict[str, Any], path: Path | None = None) -> SearchSpec:
    """A validated search from a parsed file; every problem is one SearchError line naming its field."""
    where = f"search {path}" if path else "search"
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise SearchError(f"{where}: unknown key(s) {unknown}; the keys are {list(KEYS)}")
    for key in ("base", "budget", "allowance", "reference", "rounds"):
        if key not in spec:
            raise SearchError(f"{where}: missing `{key}` (see searches/structure_search.yaml)")
    try:
        name = check_name(spec.get("name"))
    except SweepError as err:
        raise SearchError(f"{where}: {err}") from None
    budget = _positive(f"{where}.budget", spec["budget"])
    candidates = [Candidate(label, _overrides(f"{where}.structures.{label}", o))
                  for label, o in (spec.get("structures") or {}).items()]
    extra = _overrides(f"{where}.theta_overrides", spec.get("theta_overrides") or [])
    for label, value in (spec.get("theta") or {}).items():
        theta = _theta(f"{where}.theta.{label}", value)
        text = ",".join(format(v, ".8g") for v in theta)
        candidates.append(Candidate(label, ["structure=einsum", f"structure.theta=[{text}]", *extra], theta))
    labels = [c.label for c in candidates]
    if not candidates:
        raise SearchError(f"{where}: no candidates; give `theta` points and/or named `structures`")
    clash = sorted({lab for lab in labels if labels.count(lab) > 1} | ({DENSE} & set(labels)))
    if clash:
        raise SearchError(f"{where}: label(s) {clash} used twice (or `dense`, the baseline's); give each its own")
    lr = spec.get("lr_check") or {}
    if lr and (not isinstance(lr, dict) or set(lr) != {"values", "labels"}):
        raise SearchError(f"{where}.lr_check: must be {{values: [3 learning rates], labels: [...] or all}}")
    values = [_positive(f"{where}.lr_check.values", v) for v in lr.get("values", [])]
    if lr and len(set(values)) != 3:
        raise SearchError(f"{where}.lr_check.values={values}: give 3 distinct learning rates around the base one")
    lr_labels = [DENSE, *labels] if lr.get("labels") == "all" else list(lr.get("labels") or [])
    missing = sorted(set(lr_labels) - {DENSE, *labels})
    if missing:
        raise SearchError(f"{where}.lr_check.labels: {missing} are not candidates; name candidates (or `dense`) "
                          "or write `all`")
    out = SearchSpec(
        name, str(spec.get("description") or ""), _overrides(f"{where}.base", spec["base"]), budget,
        _positive(f"{where}.allowance", spec["allowance"]), _overrides(f"{where}.reference", spec["reference"]),
        candidates, _stages(where, spec["rounds"], budget), _count(f"{where}.sizes", spec.get("sizes", 4), 3),
        _positive(f"{where}.tokens_per_param", spec.get("tokens_per_param", 20)), values, lr_labels,
        _count(f"{where}.replicates", spec.get("replicates", 200), 10), path)
    first = out.lr_cost + out.cost(out.stages[0], len(candidates))
    if first > out.allowance:
        raise SearchError(f"{where}.allowance={out.allowance:.3g}: the LR check and the first round alone need "
                          f"{first:.3g} training FLOPs; raise the allowance or lower the first round's fraction")
    return out


def load_search(name: str, extra_dirs: Sequence[str] = ()) -> SearchSpec:
    path = find_search(name, extra_dirs)
    try:
        spec = load_sweep_file(path)
    except SweepPathError as err:
        raise SearchError(f"+search={name}: {err}", "search") from None
    return parse(spec, path)
