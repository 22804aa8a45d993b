"""The report in the wandb dashboard: a tiny real sweep logged offline, its report logged with --to-wandb, and the
offline run files read back: the analysis run sits in the sweep's group with the report's multipliers, statuses
and plots, each training run's summary carries N_eff and the structure's settings, and a rerun reuses the run."""

from __future__ import annotations

import json
import time
from collections import defaultdict

import pytest

from analysis.cli import main
from scaling.launch.submit import launch
from scaling.store.results import iter_run_dirs
from sweep_fixtures import TINY_BASE, launch_cfg, tiny_sweep
from wandb_records import item_key, read_records


def _records(path, wait_s: float = 30.0):
    """The run file's records by type, once its exit record is written (wandb's writer may still be flushing)."""
    deadline = time.monotonic() + wait_s
    while True:
        by_type = defaultdict(list)
        for record in read_records(path):
            by_type[record.WhichOneof("record_type")].append(record)
        if by_type["exit"] or time.monotonic() > deadline:
            return by_type
        time.sleep(0.5)


def _history(by_type) -> dict:
    """History items by top-level key; a media or table value (written as nested keys `multipliers.path`, ...)
    as a dict."""
    out: dict = {}
    for record in by_type["history"]:
        for item in record.history.item:
            parts = list(item.nested_key) or item.key.split(".", 1)
            value = json.loads(item.value_json)
            if len(parts) == 1:
                out[parts[0]] = value
            else:
                out.setdefault(parts[0], {})[".".join(parts[1:])] = value
    return out


def _summary(by_type) -> dict:
    return {item_key(i): json.loads(i.value_json) for r in by_type["summary"] for i in r.summary.update}


@pytest.mark.slow  # trains an 8-run sweep, then two full reports
def test_report_to_wandb_logs_one_analysis_run_in_the_sweeps_group(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    sweep = tiny_sweep(base=[*TINY_BASE, "logger.mode=offline", "train.schedule=constant"],
                       axes={"model.width": [16, 32, 48, 64]},
                       budgets={"flops": [4e9, 8e9, 1.6e10], "from_curves": True})
    launch(launch_cfg(tmp_path, sweep, "cluster=debug"))
    for rdir in iter_run_dirs(tmp_path):  # every training run's summary: N_eff and the structure's settings
        [path] = rdir.glob("wandb/offline-run-*/run-*.wandb")
        summary = _summary(_records(path))
        assert summary["n_eff"] > 0 and summary["structure_settings"]["name"] in ("dense", "btt")
    out = tmp_path / "report"
    args = ["report", "--results", str(tmp_path), "--out", str(out), "--replicates", "50", "--workers", "1",
            "--loss-noise", "0.02", "--to-wandb"]
    assert main(args) == 0
    [first] = [line.rsplit(": ", 1)[1] for line in capsys.readouterr().out.splitlines()
               if line.startswith("logged 1 analysis run(s)")]
    [path] = out.glob(f"wandb/offline-run-*-{first}/run-{first}.wandb")
    by_type = _records(path)
    run = by_type["run"][0].run
    assert (run.run_group, run.job_type, run.run_id) == ("tiny", "analysis", first)
    files = path.parent / "files"
    history = _history(by_type)
    table = json.loads((files / history["multipliers"]["path"]).read_text())
    fits = json.loads((out / "fits.json").read_text())
    [exp] = fits["experiments"]
    pooled = exp["pooled"]
    key = "multiplier" if pooled["model"] == "shared" else "multiplier_per_label"
    logged = {row[1]: row[3:6] for row in table["data"]}
    assert logged == {label: [v[key]["value"], v[key]["lo"], v[key]["hi"]] for label, v in pooled["labels"].items()}
    statuses = json.loads((files / history["fit_status"]["path"]).read_text())["data"]
    assert {(r[1], r[2], r[3]) for r in statuses} == {(label, fit, st["status"]) for label, res in exp["labels"].items()
                                                      for fit, st in res["status"].items()}
    plots = {k.removeprefix("plots/") for k in history if k.startswith("plots/")}
    assert plots == {p.stem for p in (out / "plots").glob("tiny_*.png")} and plots
    summary = _summary(by_type)
    assert "btt" in summary["verdict"] and summary[f"multiplier/{exp['experiment']}/btt"] == logged["btt"][0]
    # the same report again: the same analysis run id
    assert main(args) == 0
    assert f"logged 1 analysis run(s) to wandb project structured-scaling: {first}" in capsys.readouterr().out
