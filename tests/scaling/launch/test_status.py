"""What `scaling.status` says when its results root holds no runs (e.g. the default ./results of another folder), and
its progress bar's rate and ETA on a resumed sweep."""

from __future__ import annotations

import logging
import re
import time

from scaling.launch.status import log_status, sweep_bar
from scaling.store.results import run_dir


def test_status_of_an_empty_results_root_says_where_it_looked(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="scaling.launch.status")
    states = log_status(str(tmp_path / "results"), "grid", ["0123456789abcdef"])
    assert states == {"pending": 1}
    assert caplog.messages == [
        "sweep 'grid': 1 runs: pending 1",
        f"  note: results_root={tmp_path / 'results'} holds no runs yet; if the sweep ran, give its "
        "results_root=DIR (a relative one is read from the current directory) or set $SCALING_RESULTS"]
    run_dir(tmp_path / "results", "0123456789abcdef").mkdir(parents=True)
    caplog.clear()
    log_status(str(tmp_path / "results"), "grid", ["0123456789abcdef"])
    assert caplog.messages == ["sweep 'grid': 1 runs: pending 1"]  # a store with runs: no note


def test_a_resumed_sweeps_bar_starts_at_the_work_done_and_rates_only_what_follows():
    bar = sweep_bar("resumed", {"a": 80.0, "b": 20.0}, "s", done=80.0)  # a finished, b not started
    opened = bar.format_meter(**bar.format_dict)
    assert "80%" in opened and "?compute-s/s" in opened  # no rate before any work is seen
    time.sleep(0.5)
    bar.update(5.0)  # b a quarter through, half a second later
    line = bar.format_meter(**bar.format_dict)
    bar.close()
    rate = float(re.search(r"([\d.]+)compute-s/s", line).group(1))
    minutes, seconds = map(int, re.search(r"<(\d+):(\d+),", line).groups())
    assert "85%" in line and 2 <= rate <= 10  # 5 compute-s in 0.5 s or more (counted from 0 it would be 170/s)
    assert 60 * minutes + seconds >= 1  # the 15 compute-s left at that rate: 1.5 s or more

