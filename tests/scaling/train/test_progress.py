"""Progress reports: the per-step log line, progress.json, FLOP-weighted sweep progress, readable durations."""

from __future__ import annotations

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
    assert work_done(root, states, weights, partial=True) == 4e9  # 1e9 done + a third of the big run
    # a manifest from before FLOPs were recorded: count finished runs
    weights, unit = run_weights(list(flops), {small: None})
    assert unit == "run" and work_done(root, states, weights, partial=False) == 1.0
