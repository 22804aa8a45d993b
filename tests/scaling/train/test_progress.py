"""Progress reports: the per-step log line, progress.json, time-weighted sweep progress and its ETA, readable
durations."""

from __future__ import annotations

import pytest

from scaling.train.progress import RunProgress, format_duration, run_tag, run_weights, work_done
from scaling.store.results import atomic_write_json, read_json, run_dir


def test_durations_read_as_seconds_minutes_or_hours():
    assert [format_duration(s) for s in (0.4, 89, 90, 750, 5399, 5400, 469_368)] == [
        "0 s", "89 s", "1.5 min", "12.5 min", "90.0 min", "1.5 h", "130.4 h"]


def test_a_run_reports_a_line_per_log_step_and_a_progress_file(tmp_path, capsys):
    progress = RunProgress(tmp_path, "btt_r4", steps=128, unit="token", enabled=True, every_s=3600)
    progress.report(40, 10_240, 3.5e9, 2.45123, 3210.4)
    progress.report(50, 12_800, 4.4e9, 2.4, 3300.0)  # within every_s: a line, no new file
    assert capsys.readouterr().out.splitlines() == [
        "[btt_r4] step 40/128 tokens 10,240 loss 2.4512 tokens/s 3,210",
        "[btt_r4] step 50/128 tokens 12,800 loss 2.4000 tokens/s 3,300"]
    assert {k: v for k, v in read_json(tmp_path / "progress.json").items() if k != "time"} == {
        "step": 40, "tokens": 10_240, "flops": 3.5e9, "loss": 2.45123}
    progress.report(128, 32_768, 1.1e10, 2.1, 3000.0)  # the last step is always written
    assert read_json(tmp_path / "progress.json")["step"] == 128
    RunProgress(tmp_path / "rank1", "btt_r4", 128, "token", enabled=False).report(1, 256, 1.0, 5.0, 1.0)
    assert capsys.readouterr().out.count("\n") == 1 and not (tmp_path / "rank1").exists()


def test_a_runs_lines_name_its_label_width_and_seed():
    cfg = {"label": "btt_r4", "model": {"width": 64}, "structure": {"name": "btt", "rank": 4}, "train": {"seed": 2}}
    assert run_tag(cfg) == "btt_r4 d64 s2"
    assert run_tag({**cfg, "label": None}) == "btt_r4 d64 s2"  # outside a sweep: the default label


def test_sweep_progress_counts_flops_done(tmp_path):
    root = str(tmp_path)
    small, big, later = "0" * 16, "1" * 16, "2" * 16
    flops = {small: 1e9, big: 9e9, later: 9e9}
    weights, unit = run_weights(list(flops), flops)
    assert unit == "FLOP" and weights == flops
    atomic_write_json(run_dir(root, big) / "progress.json", {"step": 10, "flops": 3e9})
    states = {small: "completed", big: "running", later: "pending"}
    assert work_done(root, states, weights, flops) == 4e9  # 1e9 done + a third of the big run
    # a manifest from before FLOPs were recorded: count finished runs
    weights, unit = run_weights(list(flops), {small: None})
    assert unit == "run" and work_done(root, states, weights) == 1.0


def test_estimated_seconds_weight_runs_and_fill_in_the_unknown_at_the_median_rate(tmp_path):
    a, b, c, d = (str(i) * 16 for i in range(4))
    flops = {a: 1e9, b: 1e9, c: 2e9, d: 4e9}
    weights, unit = run_weights(list(flops), flops, {a: 300.0, b: 60.0, c: 100.0})
    # seconds per FLOP of a, b, c: 3e-7, 6e-8, 5e-8; d gets their median, 6e-8
    assert unit == "s" and weights == pytest.approx({a: 300.0, b: 60.0, c: 100.0, d: 240.0}, rel=1e-12)
    atomic_write_json(run_dir(str(tmp_path), c) / "progress.json", {"flops": 5e8})
    states = {a: "completed", b: "diverged", c: "running", d: "pending"}
    assert work_done(str(tmp_path), states, weights, flops) == pytest.approx(300 + 60 + 100 / 4)
    # with the estimate's start-up (5 s) done once the run reports: 5 + a quarter of the other 95
    assert work_done(str(tmp_path), states, weights, flops, startup=5.0) == pytest.approx(300 + 60 + 5 + 95 / 4)
    states[d] = "running"  # started, but no progress.json yet: nothing of it is done
    assert work_done(str(tmp_path), states, weights, flops, startup=5.0) == pytest.approx(300 + 60 + 5 + 95 / 4)
    # a run with neither its seconds nor its FLOPs: FLOPs can't be completed either, so runs are counted
    assert run_weights([a, d], {a: 1e9}, {a: 300.0})[1] == "run"
    assert run_weights([a, b], flops, {})[1] == "FLOP"


def eta(weights: dict, done: dict, elapsed: float) -> float:
    """What the sweep bar's ETA is (tqdm, smoothing=0): the time per unit of work so far, times the work left."""
    work = sum(weights[rid] for rid in done)
    return elapsed * (sum(weights.values()) - work) / work


def test_seconds_make_the_eta_right_whichever_runs_go_first():
    # the quickstart's width-8 and width-48 dense runs: the same FLOPs (3.2e11), 308 s and 57 s on 2 CPU cores
    narrow, wide = "0" * 16, "1" * 16
    flops = {narrow: 3.2e11, wide: 3.2e11}
    by_flops = run_weights(list(flops), flops)[0]
    by_time = run_weights(list(flops), flops, {narrow: 308.0, wide: 57.0})[0]
    # the narrow run first, one job: 57 s are left when it ends
    assert eta(by_time, {narrow}, elapsed=308) == 57
    assert eta(by_flops, {narrow}, elapsed=308) == 308  # 5.4x too high
    # the wide (cheap) run first: 308 s are left
    assert eta(by_time, {wide}, elapsed=57) == 308
    assert eta(by_flops, {wide}, elapsed=57) == 57  # 5.4x too low
