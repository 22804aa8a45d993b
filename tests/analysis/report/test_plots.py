"""What the report's figures and tables show: a loss per token or per example, parity ticked on the multiplier
axis, 1-2-5 ticks on narrow log axes, a failed fit's reason once per table row, and the taxonomy plot drawing the
labels its trends use, and each report's scale beside the papers'."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.report import plots
from types import SimpleNamespace

from analysis.fit.bootstrap import Interval
from analysis.report.build import StructureResult
import pandas as pd

from analysis.report.markdown import _grey, _md_table, scale_note, taxonomy_rows


def _axes():
    fig = Figure()
    FigureCanvasAgg(fig)
    return fig.subplots()


def test_loss_unit_follows_the_family():
    assert plots.loss_unit("gpt2") == "nats/token"
    assert plots.loss_unit("mlp") == plots.loss_unit("vit") == "nats/example"


def test_multiplier_axis_ticks_parity_and_narrow_log_axes_get_1_2_5_ticks():
    ax = _axes()
    ax.set_yscale("log")
    plots._log_ticks(ax.yaxis, 0.28, 3.6, must=(1.0,))
    assert list(ax.yaxis.get_major_locator().tick_values(0.28, 3.6)) == [0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0]
    ax = _axes()
    ax.plot([2.1e10, 3.3e11], [2.1, 2.6])
    plots._log_axes(ax)
    ticks = ax.xaxis.get_major_locator().tick_values(*ax.get_xlim())
    assert [plots.short_number(t) for t in ticks] == ["20G", "50G", "100G", "200G"]


def test_a_failed_fits_reason_shows_once_per_row():
    reason = _grey("failed: frontier: the envelope has 0 points")
    [_, _, row, _] = _md_table(["label", "alpha", "E", "A"], [["btt", reason, reason, reason]])
    assert row == f"| btt | {reason} | – | – |"


def _einsum_label(label: str, omega: float, alpha: float, status: str) -> StructureResult:
    res = StructureResult(label, "einsum", 5, (1e4, 2e4), (1e4, 2e4), omega=omega, psi=1.0, nu=0.5)
    res.frontier = SimpleNamespace(params={"alpha": Interval(alpha, alpha - 0.05, alpha + 0.05)})
    res.status["frontier"] = SimpleNamespace(status=status)
    return res


def test_the_taxonomy_plot_draws_the_labels_its_trends_use():
    structures = {lab: _einsum_label(lab, omega, alpha, status) for lab, omega, alpha, status in
                  [("a", 0.0, 0.3, "ok"), ("b", 0.5, 0.2, "weak"), ("c", 0.25, 9.9, "failed")]}
    rows = taxonomy_rows(structures)
    assert list(rows["label"]) == ["a", "b"] and list(rows["alpha"]) == [0.3, 0.2]


def test_a_report_states_its_scale_beside_the_papers():
    runs = pd.DataFrame({"flops": [1.6e11, 6.4e11], "n_eff": [5.6e3, 8.8e4]})
    note = scale_note("gpt2", runs)
    assert note.startswith("Scale: These runs train with 1.6e+11-6.4e+11 FLOPs at 5.6e+03-8.8e+04 effective parameters")
    assert "1e17-1e20 training FLOPs (CBS)" in note and "absent at this scale, not that it is absent" in note
    assert scale_note("toy", runs) == "Scale: These runs train with 1.6e+11-6.4e+11 FLOPs at 5.6e+03-8.8e+04 " \
        "effective parameters."
    assert scale_note("mlp", pd.DataFrame({"flops": [3e12, 3e12]})).startswith("Scale: These runs train with 3e+12 "
                                                                              "FLOPs each; CBS's MLP result")
