"""Runs from a wandb project, turned into the same tables as run directories give.

`records_from_wandb_runs` maps API-like run objects (attributes id, state, summary, config, and a
`scan_history()` method) to run records; `load_wandb` fetches them with `wandb.Api()`. A run's summary is
expected to carry the summary.json keys the trainer writes; missing `status` falls back to wandb's state.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

from analysis.errors import AnalysisError
from analysis.io.load import RunRecord, RunTable, table_from_records
from scaling.store.states import RunState

# wandb's run states (keys) as summary.json statuses.
_STATE_STATUS = {"finished": RunState.COMPLETED, "crashed": RunState.FAILED, "failed": RunState.FAILED,
                 "killed": RunState.FAILED, "running": RunState.RUNNING, "preempted": RunState.RUNNING,
                 "pending": RunState.RUNNING}


def _nested(config: Mapping[str, Any]) -> dict[str, Any]:
    """wandb configs may be flat (`model.width`) or nested, and values may be wrapped as {'value': v}."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and set(value) == {"value"}:
            value = value["value"]
        node = out
        *parents, leaf = str(key).split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _nested(value) if isinstance(value, Mapping) else value
    return out


def _run_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The run config of a wandb run. Runs logged before issue 23 had their `structure` section replaced by the
    structure's name (the plan was merged over the config): that name is all that is left of it."""
    out = _nested(config)
    if isinstance(out.get("structure"), str):
        out["structure"] = {"name": out["structure"]}
    return out


def _eval_rows(history: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Evaluation rows: the trainer logs `eval/val_loss` (scaling.train.tracking); older runs logged `val_loss`."""
    rows = []
    for h in history:
        val_loss = h.get("eval/val_loss", h.get("val_loss"))
        if val_loss is None:
            continue
        rows.append({"kind": "eval", "step": h.get("step", h.get("_step")), "tokens": h.get("tokens"),
                     "flops": h.get("flops"), "val_loss": val_loss, "wall_s": h.get("wall_s")})
    return rows


def records_from_wandb_runs(runs: Iterable[Any]) -> Iterator[RunRecord]:
    """Run records from wandb API run objects (or anything with the same attributes)."""
    for run in runs:
        summary = dict(getattr(run, "summary", {}) or {})
        summary.setdefault("status", _STATE_STATUS.get(getattr(run, "state", ""), RunState.FAILED))
        summary["status"] = str(summary["status"]).lower()  # runs before issue 23 logged the state's name
        rid = str(summary.get("run_id") or run.id)
        summary["run_id"] = rid
        yield RunRecord(rid, summary, _run_config(dict(getattr(run, "config", {}) or {})),
                        _eval_rows(run.scan_history()), f"wandb:{getattr(run, 'path', run.id)}")


def load_wandb(project: str, filters: dict[str, Any] | None = None) -> RunTable:
    """All runs of `entity/project` through wandb.Api(); needs network access and a wandb login."""
    import wandb  # imported here: only this path needs it

    try:
        runs = wandb.Api().runs(project, filters=filters or {})
        table = table_from_records(records_from_wandb_runs(runs))
    except (ValueError, wandb.errors.CommError) as err:
        raise AnalysisError(f"project={project}: could not read the project ({err}); check the entity/project "
                            "path and `wandb login`", "project") from err
    if table.runs.empty:
        raise AnalysisError(f"project={project}: no usable runs; {table.exclusion_note()}", "project")
    return table
