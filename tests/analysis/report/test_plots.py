"""What the report's figures and tables show: a loss per token or per example, parity ticked on the multiplier
axis, 1-2-5 ticks on narrow log axes, and a failed fit's reason once per table row."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.report import plots
from analysis.report.markdown import _grey, _md_table


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
