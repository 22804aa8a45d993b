"""Fit statuses: a parameter at a bound fails a fit, wide intervals and thin data make it weak, a failed
extrapolation makes it weak, and the report greys failed fits and cites only ok ones in its verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import fit_frontier, fit_parametric, table_from_records
from analysis.fit.bootstrap import Interval
from analysis.fit.diagnostics import FitStatus, frontier_status, parametric_status, worst
from analysis.report.markdown import markdown, verdict
from analysis.report.build import analyse
from analysis.io.synthetic import HOFFMANN, SyntheticStructure, SyntheticSweep


def frontier_curves_of(E: float, rng) -> pd.DataFrame:
    """Runs whose envelope is L = E + 30 C^-0.15: each run's curve lies on it after its first point, which lies
    above. (It used to be only each run's last point on it: the envelope then came from raw points; it is now read
    from curves interpolated at common bin centres, where such runs would all sit 5% above the law.)"""
    rows = []
    for i, c0 in enumerate(np.geomspace(1e12, 1e15, 12)):
        for j, f in enumerate(c0 * np.geomspace(1, 4, 4)):
            rows.append({"run_id": f"r{i}", "flops": f, "loss": (E + 30 * f ** -0.15) * (1 + 0.05 * (j < 1))
                         * np.exp(rng.normal(0, 1e-3))})
    return pd.DataFrame(rows)


def test_a_parameter_at_its_bound_fails_the_fit_with_the_reason():
    rng = np.random.default_rng(0)
    n, d = (x.ravel() for x in np.meshgrid(np.geomspace(1e6, 1e9, 6), np.geomspace(1e8, 1e11, 6)))
    loss = (2 + 400 / n ** 0.34) * np.exp(rng.normal(0, 1e-3, n.size))  # no dependence on D: beta -> 0
    fit = fit_parametric(n, d, loss, replicates=50)
    assert fit.at_bound == ["beta at its lower bound"]
    status = parametric_status(fit)
    assert status.status == "failed" and status.reasons[0] == "beta at its lower bound"


def test_few_points_wide_intervals_and_missed_extrapolation_are_weak():
    runs = table_from_records(SyntheticSweep([SyntheticStructure("dense", HOFFMANN)], budgets=(1e13, 4e13, 1.6e14),
                                             sizes_per_budget=3, repeat_seeds=1, diverged=0).records()).runs
    fit = fit_parametric(runs["n_eff"], runs["tokens"], runs["final_val_loss"], replicates=50)
    assert "9 runs for 5 parameters (fewer than 2 per parameter)" in parametric_status(fit).text()
    good = fit_frontier(frontier_curves_of(2.0, np.random.default_rng(1)), replicates=50)
    assert good.at_bound == [] and frontier_status(good, pd.DataFrame()).ok
    missed = pd.DataFrame([{"fit": "frontier", "held_out": 1, "flops": 1e15, "predicted": 2.1, "lo": 2.05,
                            "hi": 2.15, "observed": 2.5, "rel_error": -0.16, "inside": False, "note": ""}])
    st = frontier_status(good, missed)
    assert st.status == "weak" and st.reasons == ("failed extrapolation: with 1 budget(s) held out, C = 1e+15 "
                                                  "observed 2.5 outside [2.05, 2.15]",)
    alpha = good.params["alpha"]
    narrow = frontier_status(good, pd.DataFrame(), max_factor=0.5 * (1 + alpha.hi / alpha.lo))
    assert narrow.status == "weak" and narrow.reasons[0].startswith("alpha interval [")
    assert worst({"a": FitStatus("ok"), "b": st}) == FitStatus("weak", ("b is weak",))


def test_report_greys_a_failed_fit_and_the_verdict_cites_only_ok_fits(tmp_path):
    # one FLOP budget: no isoFLOP power law can be made
    table = table_from_records(SyntheticSweep([SyntheticStructure("dense", HOFFMANN)], budgets=(1e14,),
                                              sizes_per_budget=9, diverged=0).records())
    report = analyse(table, replicates=20, workers=1)
    dense = report.experiments[0].structures["dense"]
    assert dense.status["isoflop"].status == "failed"
    assert "runs fall in one FLOP budget (1e+14)" in dense.status["isoflop"].text()
    text = markdown(report, {}, tmp_path)
    iso_row = next(line for line in text.splitlines() if line.startswith("| dense |") and "one FLOP budget" in line
                   and "color:gray" in line)
    assert "0." not in iso_row.split("color:gray")[0]  # no numbers before the greyed reason
    line = verdict(report.experiments[0])[0]
    assert "N* ~ C^a" not in line and "isoflop failed" in line


def test_interval_checks_on_headline_quantities():
    from analysis.fit.diagnostics import _intervals
    bad, wide = _intervals({"a": Interval(0.5, float("nan"), float("nan")), "b": Interval(0.5, 0.1, 0.9),
                            "c": Interval(0.5, 0.45, 0.55), "d": Interval(0.0729, 0.0727, 0.0727)}, 3.0)
    assert bad == ["a has no finite bootstrap interval"]
    assert wide == ["b interval [0.1, 0.9] spans 9x (more than 3x)",
                    "d = 0.0729 lies outside its interval [0.0727, 0.0727] (a degenerate bootstrap: too few points "
                    "or too little noise to resample)"]


def _experiment(*labels: tuple[str, Interval | None, FitStatus]):
    from analysis.report.build import ExperimentResult, StructureResult

    structures = {"dense": StructureResult("dense", "dense", 10, (1.0, 2.0), (1.0, 2.0))}
    for label, multiplier, status in labels:
        structures[label] = StructureResult(label, label, 10, (1.0, 2.0), (1.0, 2.0), multiplier=multiplier,
                                            status={"multiplier": status})
    return ExperimentResult(None, "gpt2/shakespeare", structures, 1e12, pd.DataFrame(), pd.DataFrame(), [])


def test_headline_names_the_winner_per_flop_only_from_ok_multipliers():
    from analysis.report.markdown import headline

    ahead = _experiment(("btt", Interval(2.0, 1.5, 2.6), FitStatus("ok")),
                        ("kron", Interval(0.5, 0.4, 0.6), FitStatus("ok")),
                        ("tt", Interval(1.1, 0.8, 1.4), FitStatus("ok")))
    text = headline(ahead)
    assert text.startswith("At C = 1e+12 FLOPs: btt beats dense per FLOP: it reaches dense's loss with 2x less "
                           "compute")
    assert "kron is behind dense per FLOP: it needs 2x more compute" in text
    assert "tt and dense cannot be told apart per FLOP" in text
    weak = headline(_experiment(("btt", Interval(2.0, 1.5, 2.6), FitStatus("weak", ("wide",)))))
    assert weak == ("At C = 1e+12 FLOPs: the evidence is too weak to say which label wins per FLOP: no compute "
                    "multiplier vs dense has status ok (btt (weak); see Fit status).")
    from analysis.report.build import StructureResult  # a label whose frontier failed has no multiplier: still named
    unfitted = _experiment(("btt", Interval(2.0, 1.5, 2.6), FitStatus("ok")))
    unfitted.structures["btt_norm"] = StructureResult("btt_norm", "btt_norm", 10, (1.0, 2.0), (1.0, 2.0))
    assert headline(unfitted).endswith(" Too weak to cite: btt_norm (no fit).")


def test_taxonomy_trends_leave_out_failed_frontiers():
    from analysis.report.build import StructureResult, exponent_fits

    flops = np.geomspace(1e10, 1e12, 12)
    curves = pd.DataFrame({"run_id": [f"r{i}" for i in range(12)], "flops": flops, "loss": 2 + 30 * flops ** -0.2})
    fit = fit_frontier(curves, replicates=20)
    results = {name: StructureResult(name, "einsum", 5, (1.0, 2.0), (1.0, 2.0), frontier=fit,
                                     status={"frontier": FitStatus(status, (() if status == "ok" else ("why",)))})
               for name, status in (("ok_one", "ok"), ("weak_one", "weak"), ("failed_one", "failed"))}
    results["unfitted"] = StructureResult("unfitted", "einsum", 5, (1.0, 2.0), (1.0, 2.0))
    assert sorted(exponent_fits(results)) == ["ok_one", "weak_one"]


def test_zero_width_and_edge_intervals_are_flagged():
    from analysis.fit.diagnostics import _intervals
    bad, wide = _intervals({"alpha": Interval(0.278, 0.278, 0.278), "a": Interval(0.5, 0.5, 0.9),
                            "b": Interval(0.5, 0.3, 0.5), "c": Interval(float("nan"), 0.3, 0.5),
                            "d": Interval(0.5, 0.45, 0.55)}, 3.0)
    assert bad == ["c has no finite bootstrap interval"]
    assert wide == ["alpha interval [0.278, 0.278] has zero width (a degenerate bootstrap: every replicate gave the "
                    "same value)",
                    "a = 0.5 sits on an end of its interval [0.5, 0.9] (replicates piled on one value or a bound)",
                    "b = 0.5 sits on an end of its interval [0.3, 0.5] (replicates piled on one value or a bound)"]


def test_multiplier_status_rules():
    from analysis.fit.diagnostics import multiplier_status
    ok, weak = FitStatus("ok"), FitStatus("weak", ("E poorly pinned",))
    parents = {"btt's frontier": ok, "dense's frontier": ok}
    assert multiplier_status(Interval(1.5, 1.0, 2.5), parents) == FitStatus("ok")  # 2.5 / 1.0 = 2.5: at the limit
    st = multiplier_status(Interval(1.5, 0.5, 3.35), parents)  # 6.7x wide, as in structures_gpt2
    assert st == FitStatus("weak", ("multiplier interval [0.5, 3.35] spans 6.7x (more than 2.5x)",))
    st = multiplier_status(Interval(0.65, 0.0, 1.09), parents)
    assert st == FitStatus("weak", ("multiplier interval [0, 1.09] reaches 0 or below (more than 2.5x)",))
    st = multiplier_status(Interval(1.2, 1.3, 1.6), parents)
    assert st.status == "weak" and st.reasons[0].startswith("multiplier = 1.2 lies outside its interval")
    assert multiplier_status(Interval(1.3, 1.3, 1.6), parents).reasons[0].startswith("multiplier = 1.3 sits on an end")
    assert multiplier_status(Interval(1.3, 1.3, 1.3), parents).reasons[0].endswith("has zero width (a degenerate "
                                                                                   "bootstrap: every replicate gave "
                                                                                   "the same value)")
    assert multiplier_status(Interval(1.3, np.nan, np.nan), parents) == FitStatus(
        "failed", ("multiplier has no finite bootstrap interval",))
    st = multiplier_status(Interval(0.0, 0.1, 0.2), parents)  # the point fit never reaches dense's loss
    assert st.status == "failed" and "multiplier = 0: the structure's fit never reaches dense's loss" in st.reasons
    # 3% of the replicates had a multiplier of 0 (left out), more than the 2.5% tail of a 95% interval: failed
    st = multiplier_status(Interval(1.5, 1.0, 2.0, dropped=0.03), parents)
    assert st == FitStatus("failed", ("3.0% of bootstrap replicates never reach dense's loss (multiplier 0 or "
                                      "undefined; more than the 2.5% tail): the interval's lower end is 0",))
    assert multiplier_status(Interval(1.5, 1.0, 2.0, dropped=0.02), parents).ok  # 2% left out: within the tail
    # the worse of the frontiers' statuses and its own, with both sets of reasons
    st = multiplier_status(Interval(1.5, 0.5, 3.35), {"btt's frontier": weak, "dense's frontier": ok})
    assert st == FitStatus("weak", ("btt's frontier is weak", "multiplier interval [0.5, 3.35] spans 6.7x "
                                    "(more than 2.5x)"))


def test_uninformative_holdouts_are_neither_inside_nor_outside():
    from analysis.fit.diagnostics import _extrapolation, informative
    from analysis.fit.extrapolate import _row
    assert informative(Interval(1.0, 0.8, 2.0)) and not informative(Interval(1.0, 0.3, 10.0))  # 2.5x vs 33x
    assert not informative(Interval(1.0, 0.0, 2.0)) and not informative(Interval(1.0, np.nan, np.nan))
    wide = _row("isoflop", 1, 1e15, pred=Interval(3e4, 5e3, 1.65e5), observed=2e4)  # 33x wide: holds anything
    assert wide["inside"] is None and wide["informative"] is False
    assert wide["note"] == "uninformative: the interval spans 33x (more than 2.5x), no check"
    narrow = _row("isoflop", 1, 1e15, pred=Interval(3e4, 2e4, 4e4), observed=5e4)
    assert narrow["inside"] is False and narrow["informative"] is True and narrow["note"] == ""
    # only the informative miss counts against the fit; the uninformative one is no check, not a pass
    assert _extrapolation(pd.DataFrame([wide, narrow]), "isoflop") == [
        "failed extrapolation: with 1 budget(s) held out, C = 1e+15 observed 5e+04 outside [2e+04, 4e+04]"]
    assert _extrapolation(pd.DataFrame([wide]), "isoflop") == []
