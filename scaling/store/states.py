"""The states of a run, and the groups of them that the trainer, the launcher and the status command act on.

A run's state is read from its directory (scaling.launch.status.run_state); summary.json's `status` holds one of
SUMMARY_STATES. RunState is a str enum, so a state is written to JSON and compared with a string as its value.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    """One run's state (in the order a run goes through them; summary.json holds the values)."""

    PENDING = "pending"  # no summary.json and no live process: never started
    RUNNING = "running"  # a live process holds its lease
    INTERRUPTED = "interrupted"  # summary.json says running, but no live process holds its lease
    COMPLETED = "completed"  # trained to its budget
    DIVERGED = "diverged"  # stopped early: the training loss blew up
    FAILED = "failed"  # stopped by an error (summary.json's `error`)
    CORRUPT = "corrupt"  # a run file cannot be used (scaling.store.results.read_summary's RunFileError says why)


# What summary.json's `status` may hold.
SUMMARY_STATES = frozenset({RunState.RUNNING, RunState.COMPLETED, RunState.DIVERGED, RunState.FAILED})
# Finished for good: the trainer returns the summary instead of training, so a relaunch skips the run.
FINISHED_STATES = frozenset({RunState.COMPLETED, RunState.DIVERGED})
# Ended (failed too): a progress bar counts the run's whole work as done.
DONE_STATES = FINISHED_STATES | {RunState.FAILED}
# Started and not ended: progress.json says how far the run got.
STARTED_STATES = frozenset({RunState.RUNNING, RunState.INTERRUPTED})
# No process works on the run: `scaling.status wait=true` stops waiting for it.
STOPPED_STATES = DONE_STATES | {RunState.INTERRUPTED, RunState.CORRUPT}
# What a launch submits (failed runs too with retry_failed=true); interrupted runs resume from their checkpoint.
SUBMIT_STATES = frozenset({RunState.PENDING, RunState.INTERRUPTED})


def in_order(states: frozenset[RunState]) -> tuple[str, ...]:
    """The values of `states` in RunState's order (for messages: a frozenset's order varies between processes)."""
    return tuple(s.value for s in RunState if s in states)
