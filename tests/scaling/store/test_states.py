"""Run states: one enum whose values are the strings on disk, and the named groups the trainer, launcher and status
command act on."""

from __future__ import annotations

import json

import pytest

from scaling.store.files import RunFileError, read_summary_file
from scaling.store.results import atomic_write_json, write_summary
from scaling.store.states import (
    DONE_STATES, FINISHED_STATES, STARTED_STATES, STOPPED_STATES, SUBMIT_STATES, SUMMARY_STATES, RunState, in_order,
)
from scaling.store.summary import SUMMARY_KEYS, TOTALS_KEYS


def test_the_values_are_the_strings_on_disk():
    assert [s.value for s in RunState] == ["pending", "running", "interrupted", "completed", "diverged", "failed",
                                           "corrupt"]
    assert RunState("completed") is RunState.COMPLETED
    assert RunState.COMPLETED == "completed" and f"{RunState.FAILED:8}|" == "failed  |"
    assert json.dumps({"status": RunState.DIVERGED}) == '{"status": "diverged"}'
    assert {"failed": 1}.get(RunState.FAILED) == 1 and "interrupted" in STOPPED_STATES


def test_the_groups():
    assert SUMMARY_STATES == {"running", "completed", "diverged", "failed"}
    assert FINISHED_STATES == {"completed", "diverged"}  # a relaunch skips them; failed runs wait for retry_failed
    assert DONE_STATES == {"completed", "diverged", "failed"}
    assert STARTED_STATES == {"running", "interrupted"}
    assert STOPPED_STATES == {"completed", "diverged", "failed", "interrupted", "corrupt"}
    assert SUBMIT_STATES == {"pending", "interrupted"}
    assert not SUBMIT_STATES & DONE_STATES and not STARTED_STATES & DONE_STATES
    assert STOPPED_STATES == set(RunState) - {RunState.PENDING, RunState.RUNNING}
    assert in_order(SUMMARY_STATES) == ("running", "completed", "diverged", "failed")


def test_a_summary_keeps_its_status_string_and_keys(tmp_path):
    write_summary(tmp_path, {"run_id": "0" * 16, "status": RunState.FAILED, "final_val_loss": None})
    assert (tmp_path / "summary.json").read_text() == \
        '{\n  "final_val_loss": null,\n  "run_id": "0000000000000000",\n  "status": "failed"\n}\n'
    assert read_summary_file(tmp_path / "summary.json")["status"] == "failed"


def test_the_summary_writer_refuses_what_the_schema_does_not_define(tmp_path):
    with pytest.raises(ValueError, match=r"summary keys \['bogus'\] are not defined"):
        write_summary(tmp_path, {"run_id": "0" * 16, "status": RunState.RUNNING, "bogus": 1})
    with pytest.raises(ValueError, match="summary status corrupt is not one of"):
        write_summary(tmp_path, {"run_id": "0" * 16, "status": RunState.CORRUPT})
    assert not (tmp_path / "summary.json").exists()
    assert SUMMARY_KEYS[:len(TOTALS_KEYS)] == TOTALS_KEYS and len(set(SUMMARY_KEYS)) == len(SUMMARY_KEYS)


@pytest.mark.parametrize("status", ["bogus", ["completed"], None])
def test_a_summary_with_an_unknown_status_is_one_line(tmp_path, status):
    path = tmp_path / "summary.json"
    atomic_write_json(path, {"status": status})
    with pytest.raises(RunFileError) as err:
        read_summary_file(path)
    assert str(err.value) == (f"{path}: status {status!r} is not one of ('running', 'completed', 'diverged', "
                              "'failed'); delete summary.json to let the next launch resume the run from its "
                              "checkpoint (or retrain it)")
