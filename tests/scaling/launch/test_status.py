"""What `scaling.status` says when its results root holds no runs (e.g. the default ./results of another folder)."""

from __future__ import annotations

import logging

from scaling.launch.status import log_status
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
