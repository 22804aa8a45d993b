"""Plan the next round of a sweep from its results: per label, model sizes centred on the predicted N*(C).

Per label the report's isoFLOP size law N*(C) = G C^a (analysis.fit.isoflop, fitted exactly as `analysis report`
fits it, with its bootstrap interval) predicts N*(C) at each new budget. `sizes` effective sizes are log-spaced
symmetrically around it, spanning its interval and at least MIN_SIDE x on each side (at most MAX_SIDE x), and
snapped to valid widths (multiples of WIDTH_STEP that the project's planner, scaling.train.plan.plan_run, accepts):
the smallest down, the largest up, the others to the nearest, duplicates dropped. Sizes are planned for the
first value of every other axis. The new sweep keeps the first round's base (with the run overrides its launch
recorded), axes and variant overrides, so its labels are the first round's, and gives each variant a ladder
(scaling.launch.sweeps): one rung per budget, `{flops: C, axes: {model.width: [...]}}`, so every run's tokens follow
from C and its FLOPs per token. With `allow_weak` a label whose isoFLOP fit failed is planned from its
parametric fit's N_opt(C) (approach 3), marked weak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf

from analysis.fit.bootstrap import Interval
from analysis.fit.diagnostics import FitStatus
from analysis.errors import AnalysisError
from analysis.report.build import Report, StructureResult
from scaling.config.compose import compose_run_config, load_sweep_file, sweep_dirs, sweep_files
from scaling.train.plan import ConfigError, RunPlan, plan_run
from scaling.store.manifest import Manifest, ManifestError
from scaling.launch.sweeps import SweepError, check_name, expand

WIDTH = "model.width"
DEFAULT_SIZES = 5
MIN_SIDE = 2.0  # sizes reach at least N*/2 and 2 N*, so a minimum near N* lands inside the grid
MAX_SIDE = 8.0  # ... and at most N*/8 and 8 N*, however wide a weak fit's interval is
WIDTH_STEP = 8  # candidate widths are multiples of this; plan_run keeps those the model and structure accept
_MAX_WIDTH = 1 << 16
_FIRST_WIDTHS = 64  # a variant with no runs is sized from the first widths that plan among step .. 64 step
_GROW = 1.5  # widen the searched width window by this factor until valid widths bracket the targets


@dataclass(frozen=True)
class SizeLaw:
    """A label's N*(C): which fit it comes from, that fit's status, and N*(C) = G C^a."""

    label: str
    fit: str  # "isoflop" or "parametric" (only with allow_weak, when the isoFLOP fit failed)
    status: FitStatus
    G: float
    a: Interval
    result: StructureResult

    def predict(self, flops: float) -> Interval:
        if self.fit == "isoflop":
            return self.result.isoflop.predict_n(flops)
        return self.result.parametric.optimal_allocation(flops)["n_opt"]


@dataclass
class Rung:
    """One label at one new budget: its predicted N*, the chosen widths and their effective sizes."""

    label: str
    flops: float
    n_star: Interval
    widths: list[int]
    n_eff: list[float]
    clipped: bool  # the interval reached beyond MAX_SIDE x N*


@dataclass
class NextPlan:
    name: str
    first: str  # the first round's sweep name
    first_file: Path
    spec: dict[str, Any]
    laws: dict[str, SizeLaw]
    rungs: list[Rung]
    sizes: int
    tokens: dict[tuple[str, float], list[int]] = field(default_factory=dict)  # (label, C) -> tokens of its runs


def first_round(sweep: str, sweep_dir: Sequence[str] = ()) -> tuple[Path, dict[str, Any]]:
    """The sweep file that declares `sweep` (its file stem, else its `name:`), as a dict; `sweep_dir`: folders
    to look in before the usual ones."""
    try:
        files = sweep_files(sweep_dir)
    except ValueError as err:  # a sweep_dir that does not exist
        raise AnalysisError(str(err)) from None
    path = files.get(sweep)
    for other in ([] if path else files.values()):
        try:
            if load_sweep_file(other).get("name") == sweep:
                path = other
        except Exception:  # a file that does not parse is some other sweep's problem
            continue
    if path is None and ("/" in sweep or sweep.endswith((".yaml", ".yml"))):  # a path, which --sweep does not take
        name = Path(sweep).name.rpartition(".")[0] or Path(sweep).name
        raise AnalysisError(f"sweep={sweep}: give the sweep's name, not a path: `sweep` {name} `sweep_dir` "
                            f"{Path(sweep).parent}", "sweep", "sweep_dir")
    if path is None:
        where = ", ".join(str(d) for d in sweep_dirs(sweep_dir))
        raise AnalysisError(f"sweep={sweep}: no sweep file declares it in {where}; pass the folder holding "
                            f"{sweep}.yaml in `sweep_dir`", "sweep", "sweep_dir")
    try:
        spec = load_sweep_file(path)
    except Exception as err:
        raise AnalysisError(f"sweep={sweep}: {path} cannot be read ({' '.join(str(err).split())})",
                            "sweep") from None
    if not isinstance(spec.get("variants"), dict) or not spec["variants"]:
        raise AnalysisError(f"sweep={sweep}: {path} declares no variants; plan-next plans one ladder per variant "
                            "(label), so give the sweep a variant per structure", "sweep")
    return path, spec


def size_laws(report: Report, labels: Sequence[str], allow_weak: bool) -> dict[str, SizeLaw]:
    """Each label's size law from the report's fits; a failed one is an error unless `allow_weak`."""
    found: dict[str, StructureResult] = {}
    for exp in report.experiments:
        for label, res in exp.structures.items():
            if label in found:
                raise AnalysisError(f"label {label}: its runs span two experiments (model family / data set); "
                                    "plan each experiment's sweep on its own")
            found[label] = res
    laws = {}
    for label in labels:
        res = found.get(label)
        if res is None:
            raise AnalysisError(f"label {label}: no usable runs in the first round, so no N*(C) to centre its "
                                "sizes on; let its runs finish (or rerun the failed ones) first")
        iso = res.status.get("isoflop") or FitStatus("failed", ("no isoFLOP fit",))
        if res.isoflop is not None and iso.status != "failed":
            laws[label] = SizeLaw(label, "isoflop", iso, math.exp(res.isoflop.intercept), res.isoflop.a, res)
        elif not allow_weak:
            raise AnalysisError(f"label {label}: its size law N*(C) (isoFLOP fit) is {iso.text()}; rerun "
                                "the first round with sizes around N* at more budgets, or pass allow_weak=True to "
                                "plan it anyway (marked weak)", "allow_weak")
        elif res.isoflop is not None:
            laws[label] = SizeLaw(label, "isoflop", FitStatus("weak", ("allowed: " + iso.text(),)),
                                  math.exp(res.isoflop.intercept), res.isoflop.a, res)
        elif res.parametric is not None:
            par = res.status.get("parametric", FitStatus("failed"))
            status = FitStatus("weak", (f"isoFLOP fit {iso.text()}", f"planned from the parametric fit ({par.text()})"))
            g = res.parametric.optimal_allocation(1.0)["n_opt"].value  # N_opt(C) = G C^a, so G = N_opt(1)
            laws[label] = SizeLaw(label, "parametric", status, g, res.parametric.params["a"], res)
        else:
            raise AnalysisError(f"label {label}: no size law to plan from, even with allow_weak=True: isoFLOP fit "
                                f"{iso.text()}; parametric fit {res.status.get('parametric', iso).text()}",
                                "allow_weak")
    return laws


def targets(n_star: Interval, sizes: int) -> tuple[np.ndarray, bool]:
    """`sizes` effective sizes log-symmetric around N*, spanning its interval, MIN_SIDE to MAX_SIDE x each side."""
    sides = [math.log(MIN_SIDE)]
    if np.isfinite(n_star.lo) and n_star.lo > 0:
        sides.append(math.log(n_star.value / n_star.lo))
    if np.isfinite(n_star.hi):
        sides.append(math.log(n_star.hi / n_star.value))
    half = max(sides)
    clipped = half > math.log(MAX_SIDE)
    half = min(half, math.log(MAX_SIDE))
    return n_star.value * np.exp(np.linspace(-half, half, sizes)), clipped


class WidthPlanner:
    """Valid widths of one variant and their effective sizes N_eff = training FLOPs per token / 6 (plan_run);
    `known` (width -> N_eff of runs so far) seeds the width guess, else two planned widths do."""

    def __init__(self, label: str, overrides: list[str], step: int, known: dict[int, float]):
        self.label, self.step = label, step
        try:
            self.template = compose_run_config(overrides)
        except Exception as err:  # Hydra names the bad key or value
            raise AnalysisError(f"label {label}: its first-round overrides do not compose: {err}") from None
        self.plans: dict[int, RunPlan | None] = {}
        if not known:  # no runs yet: the slope of N_eff over width from the first two widths that plan
            known = {}
            for w in range(step, _FIRST_WIDTHS * step + 1, step):
                if len(known) < 2 and (p := self.plan(w)) is not None:
                    known[w] = p.train_flops_per_unit / 6
        if not known:
            raise AnalysisError(f"label {label}: no {WIDTH} from {step} to {_FIRST_WIDTHS * step} can be planned; "
                                "check its overrides with `python -m scaling.describe`")
        widths, n = np.log(list(known)), np.log(list(known.values()))
        # N_eff ~ c width^p from the first round (p = 2 through a single width)
        self.p, self.c = np.polyfit(widths, n, 1) if len(set(widths)) > 1 else (2.0, n[0] - 2 * widths[0])

    def plan(self, width: int) -> RunPlan | None:
        if width not in self.plans:
            cfg: DictConfig = self.template.copy()
            cfg.model.width = width
            cfg.train.flops, cfg.train.tokens = None, 1 << 40  # the budget is set per rung; here only the size
            OmegaConf.resolve(cfg)
            try:
                self.plans[width] = plan_run(cfg)
            except ConfigError:
                self.plans[width] = None
        return self.plans[width]

    def _guess(self, n: float) -> float:
        return math.exp((math.log(n) - self.c) / self.p)

    def valid(self, lo: float, hi: float, flops: float) -> dict[int, float]:
        """Valid widths (multiples of `step`, at least one step of training at `flops`) whose N_eff brackets
        [lo, hi]: the window grows until one lies at or below lo and one at or above hi, or reaches the smallest
        (largest) valid width, which then stands in for lo (hi)."""
        w_lo, w_hi = self._guess(lo) / 1.25, self._guess(hi) * 1.25
        while True:
            first = max(self.step, int(w_lo // self.step) * self.step)
            for w in range(first, int(math.ceil(w_hi / self.step)) * self.step + 1, self.step):
                self.plan(w)
            found = {w: p.train_flops_per_unit / 6 for w, p in self.plans.items()
                     if p is not None and flops >= p.units_per_step * p.train_flops_per_unit}
            low, high = any(n <= lo for n in found.values()), any(n >= hi for n in found.values())
            stuck_low = not low and first <= self.step
            stuck_high = not high and w_hi >= _MAX_WIDTH
            if found and (low or stuck_low) and (high or stuck_high):
                return dict(sorted(found.items()))
            if stuck_low or stuck_high:
                near = ", ".join(f"{w} (N_eff {n:.3g})" for w, n in sorted(found.items())[:: max(1, len(found) // 6)])
                raise AnalysisError(f"label {self.label} at C = {flops:.3g}: no valid {WIDTH} gives N_eff "
                                    f"{'at most' if stuck_low else 'at least'} {lo if stuck_low else hi:.3g} (valid "
                                    f"widths: {near or 'none'}); choose budgets nearer the first round's")
            w_lo, w_hi = (w_lo / _GROW if not low else w_lo), (w_hi * _GROW if not high else w_hi)

    def choose(self, wanted: np.ndarray, flops: float) -> tuple[list[int], list[float]]:
        """Snap target sizes to valid widths: the smallest down, the largest up, the rest to the nearest in log.
        Targets starting below the smallest valid width move up, keeping their span, to start at it; targets beyond
        the largest snap to it."""
        found = self.valid(float(wanted[0]), float(wanted[-1]), flops)
        if wanted[0] < min(found.values()):
            wanted = wanted * (min(found.values()) / wanted[0])
            found = self.valid(float(wanted[0]), float(wanted[-1]), flops)
        widths, n = np.array(list(found)), np.array(list(found.values()))
        below, above = n <= max(wanted[0], n.min()), n >= min(wanted[-1], n.max())  # never empty (rounding)
        picks = {int(widths[below][np.argmax(n[below])]), int(widths[above][np.argmin(n[above])])}
        picks |= {int(widths[np.argmin(np.abs(np.log(n / t)))]) for t in wanted[1:-1]}
        chosen = sorted(picks)
        return chosen, [found[w] for w in chosen]


def _without_width(overrides: Sequence[str]) -> list[str]:
    return [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != WIDTH]


def _first_point(axes: dict[str, list]) -> list[str]:
    """One setting of the other axes: sizes are planned for the first value of each (lr or seed leave N_eff alone)."""
    def text(v: Any) -> str:
        return "[" + ",".join(map(text, v)) + "]" if isinstance(v, (list, tuple)) else str(v)

    return [f"{k}={text(v[0])}" for k, v in axes.items() if k != WIDTH and v]


def next_spec(name: str, first: dict[str, Any], run_overrides: Sequence[str], rungs: Sequence[Rung],
              description: str) -> dict[str, Any]:
    """The second round: the first round's base (+ its launch-time run overrides), axes and variant overrides
    without model.width, and per variant a ladder of (budget, widths)."""
    spec: dict[str, Any] = {"name": name, "description": description,
                            "base": _without_width([*(first.get("base") or []), *run_overrides])}
    axes = {k: v for k, v in (first.get("axes") or {}).items() if k != WIDTH}
    if axes:
        spec["axes"] = axes
    variants = {}
    for label, variant in first["variants"].items():
        variant = variant or {}
        out: dict[str, Any] = {"overrides": _without_width(variant.get("overrides") or [])}
        own = {k: v for k, v in (variant.get("axes") or {}).items() if k != WIDTH}
        if own:
            out["axes"] = own
        out["ladder"] = [{"flops": float(r.flops), "axes": {WIDTH: r.widths}} for r in rungs if r.label == label]
        variants[label] = out
    spec["variants"] = variants
    return spec


def plan_next(report: Report, results: str | Path, sweep: str, budgets: Sequence[float], name: str,
              sizes: int = DEFAULT_SIZES, allow_weak: bool = False, sweep_dir: Sequence[str] = (),
              first: tuple[Path, dict[str, Any]] | None = None) -> NextPlan:
    """The next round `name` of `sweep` at `budgets`, from `report` (analysis.report.analyse of its results) and
    its sweep file (`first`, else found by first_round in `sweep_dir` and the usual sweep folders)."""
    check_budgets(budgets, sizes)
    path, first = first or first_round(sweep, sweep_dir)
    labels = list(first["variants"])
    extra = set(report.tables[sweep].runs["label"]) - set(labels)
    if extra:
        raise AnalysisError(f"sweep={sweep}: the results hold label(s) {sorted(extra)} that {path} does not "
                            "declare as variants; restore the sweep file the first round ran", "sweep")
    try:
        manifest = Manifest.read(Manifest.path(results, sweep))
    except ManifestError as err:
        raise AnalysisError(f"{err}; restore it, or delete it to plan without the first round's run overrides") \
            from None
    run_overrides = list(manifest.overrides) if manifest else []
    laws = size_laws(report, labels, allow_weak)
    rungs = []
    for label in labels:
        variant = first["variants"][label] or {}
        runs = report.tables[sweep].runs
        mine = runs[runs["label"] == label]
        sized = mine.dropna(subset=["width", "n_eff"])
        known = dict(zip(sized["width"].astype(int), sized["n_eff"].astype(float)))
        axes = {**(first.get("axes") or {}), **(variant.get("axes") or {})}
        overrides = [*(first.get("base") or []), *run_overrides, *(variant.get("overrides") or []),
                     *_first_point(axes)]
        planner = WidthPlanner(label, _without_width(overrides), WIDTH_STEP, known)
        for c in sorted(set(float(b) for b in budgets)):
            n_star = laws[label].predict(c)
            if not (np.isfinite(n_star.value) and n_star.value > 0):
                raise AnalysisError(f"label {label} at C = {c:.3g}: its size law predicts N* = {n_star.value}; "
                                    "the fit cannot be used")
            wanted, clipped = targets(n_star, sizes)
            widths, n_eff = planner.choose(wanted, c)
            if len(widths) < 3:
                raise AnalysisError(f"label {label} at C = {c:.3g}: only {len(widths)} distinct valid widths around "
                                    f"N* = {n_star.value:.3g}; an isoFLOP minimum needs 3 or more")
            rungs.append(Rung(label, c, n_star, widths, n_eff, clipped))
    description = (f"Second round of {sweep}, planned by `python -m analysis plan-next` from {results}: per label "
                   "and FLOP budget, widths centred on the first round's predicted compute-optimal size N*(C).")
    spec = next_spec(name, first, run_overrides, rungs, description)
    try:
        expansion = expand(OmegaConf.create(spec))
    except SweepError as err:
        raise AnalysisError(f"the planned sweep does not expand: {err}") from None
    plan = NextPlan(name, sweep, path, spec, laws, rungs, sizes)
    for run in expansion.runs:
        key = (str(run.cfg.label), float(run.cfg.train.flops))
        plan.tokens.setdefault(key, []).append(int(run.plan.units))
    return plan


def check_out(out: Path, force: bool, first: str) -> str:
    """The new sweep's name (the file's stem), once `out` is a file the plan may write."""
    if out.suffix not in (".yaml", ".yml"):
        raise AnalysisError(f"out={out}: a sweep file ends in .yaml (the launcher finds sweeps by that suffix)",
                            "out")
    if out.exists() and not force:
        raise AnalysisError(f"out={out} exists; pass force=True to overwrite it, or choose another `out`", "out",
                            "force")
    try:
        name = check_name(out.stem)
    except SweepError as err:
        raise AnalysisError(f"out={out}: the file's stem names the sweep: {err}", "out") from None
    if name == first:
        raise AnalysisError(f"out={out}: the next round needs a name of its own (the default is {first}_next.yaml)",
                            "out")
    return name


def check_budgets(budgets: Sequence[float], sizes: int) -> None:
    bad = [b for b in budgets if not (np.isfinite(b) and b > 0)]
    if not budgets or bad:
        raise AnalysisError(f"budgets={' '.join(f'{b:g}' for b in budgets)}: every budget must be a positive "
                            "number of training FLOPs, e.g. budgets=1e15 3e15", "budgets")
    if sizes < 3:
        raise AnalysisError(f"sizes={sizes}: an isoFLOP minimum needs 3 or more sizes per budget (default 5)",
                            "sizes")


def summary(plan: NextPlan) -> list[str]:
    """Per label its size law and status, and per budget N* with its interval and the sizes chosen."""
    lines = []
    for label, law in plan.laws.items():
        lines.append(f"{label}: N*(C) = {law.G:.4g} C^{law.a.value:.4g} (a {law.a.fmt('.3g')}) from the {law.fit} "
                     f"fit, status {law.status.text()}")
        for r in (r for r in plan.rungs if r.label == label):
            tokens = plan.tokens.get((label, r.flops), [0])
            lines.append(f"  C = {r.flops:.3g}: N* = {r.n_star.fmt('.3g')}{' (interval clipped)' if r.clipped else ''}"
                         f" -> widths {' '.join(map(str, r.widths))}, N_eff {min(r.n_eff):.3g}-{max(r.n_eff):.3g}, "
                         f"tokens {min(tokens):.3g}-{max(tokens):.3g}")
    return lines


def header(plan: NextPlan, command: str) -> list[str]:
    """Comment lines for the sweep file: how it was planned and where each size range came from."""
    return [f"{plan.name}: the next round of sweep {plan.first} ({plan.first_file}), planned by",
            f"  {command}",
            f"Per label and budget C: {plan.sizes} effective sizes N (training FLOPs per token / 6) log-spaced around "
            "the predicted N*(C),",
            f"spanning its interval and {MIN_SIDE:g}x to {MAX_SIDE:g}x each side, snapped to valid {WIDTH} "
            "(duplicates dropped); tokens = C / FLOPs per token.", *summary(plan)]


class _Dumper(yaml.SafeDumper):
    """Budgets as `1.28e+15` (a mantissa with a dot, so every YAML 1.1 reader reads a float), not 1280000000000000.0."""


def _float(dumper: yaml.SafeDumper, value: float) -> yaml.ScalarNode:
    if not math.isfinite(value) or value == 0 or 1e-4 <= abs(value) < 1e6:
        return dumper.represent_float(value)
    mantissa, _, exponent = f"{value:.6e}".partition("e")
    mantissa = mantissa.rstrip("0") + ("0" if mantissa.rstrip("0").endswith(".") else "")
    return dumper.represent_scalar("tag:yaml.org,2002:float", f"{mantissa}e{exponent}")


_Dumper.add_representer(float, _float)


def sweep_text(plan: NextPlan, command: str) -> str:
    """The sweep file: the comment header, then the spec as YAML."""
    body = yaml.dump(plan.spec, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=110)
    return "".join(f"# {line}\n" for line in header(plan, command)) + body
