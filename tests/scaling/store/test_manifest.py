"""The sweep manifest: one path, one atomic writer, one reader that checks every field and says in one line what is
wrong; the JSON on disk is the launcher's, field for field, and older manifests still load."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from analysis.io.load import sweep_manifests
from scaling.launch.status import sweep_runs
from scaling.launch.submit import decide, manifest_record
from scaling.launch.sweeps import expand
from scaling.store.manifest import Manifest, ManifestError, ManifestRun
from scaling.store.results import atomic_write_json
from sweep_fixtures import launch_cfg, tiny_sweep

RUNS = (ManifestRun("0123456789abcdef", "btt_r4 model.width=64 flops=1e+13", 1e13, seconds=95.5),
        ManifestRun("fedcba9876543210", "dense model.width=64 flops=1e+13", 2e13))


def test_path_write_and_read_round_trip(tmp_path):
    manifest = Manifest("tiny", RUNS, ("train.seed=1",), ("123_0", "123_1"), 1700000000.5)
    path = manifest.write(tmp_path)
    assert path == Manifest.path(tmp_path, "tiny") == tmp_path.resolve() / "sweeps" / "tiny.json"
    assert Manifest.paths(tmp_path) == [path]
    assert json.loads(path.read_text()) == {
        "name": "tiny", "overrides": ["train.seed=1"], "updated": 1700000000.5, "jobs": ["123_0", "123_1"],
        "runs": [{"run_id": "0123456789abcdef", "label": "btt_r4 model.width=64 flops=1e+13", "flops": 1e13,
                  "seconds": 95.5},
                 {"run_id": "fedcba9876543210", "label": "dense model.width=64 flops=1e+13", "flops": 2e13}]}
    assert Manifest.read(path) == manifest
    assert not list(path.parent.glob(".*.tmp"))  # written through a temp file, renamed over


def test_no_manifest_is_none(tmp_path):
    assert Manifest.read(Manifest.path(tmp_path, "nope")) is None and Manifest.paths(tmp_path) == []


def test_older_manifests_load(tmp_path):
    path = tmp_path / "sweeps" / "old.json"
    atomic_write_json(path, {"runs": [{"run_id": "0123456789abcdef", "label": "btt_r4 model.width=64"},
                                      {"run_id": "fedcba9876543210", "label": "x", "variant": "dense"},
                                      {"run_id": "00000000000000ff"}]})
    manifest = Manifest.read(path)
    assert manifest.name == "old" and manifest.overrides == () and manifest.jobs == () and manifest.updated is None
    assert [r.variant_name for r in manifest.runs] == ["btt_r4", "dense", None]
    assert [(r.flops, r.seconds) for r in manifest.runs] == [(None, None)] * 3
    assert manifest.to_json()["runs"][1] == {"run_id": "fedcba9876543210", "label": "x", "flops": None,
                                             "variant": "dense"}


BAD = {
    "torn json": (b'{"name": "x", "ru', "not JSON"),
    "not utf-8": (b"\xff\xfe{}", "not JSON"),
    "a list": (b"[]", "a JSON list, not an object"),
    "no runs": (b'{"name": "x"}', "`runs` is not a list of objects with a string run_id"),
    "a run without an id": (b'{"runs": [{"label": "a"}]}', "`runs` is not a list of objects with a string run_id"),
    "a number as label": (b'{"runs": [{"run_id": "a", "label": 3}]}',
                          "run a: label, variant, flops or seconds of the wrong type"),
    "a string as flops": (b'{"runs": [{"run_id": "a", "flops": "1e13"}]}',
                          "run a: label, variant, flops or seconds of the wrong type"),
    "a string as seconds": (b'{"runs": [{"run_id": "a", "seconds": "9"}]}',
                            "run a: label, variant, flops or seconds of the wrong type"),
    "jobs not strings": (b'{"runs": [], "jobs": [1]}', "name, overrides, jobs or updated of the wrong type"),
    "overrides a string": (b'{"runs": [], "overrides": "a=1"}', "name, overrides, jobs or updated of the wrong type"),
}


@pytest.mark.parametrize("content,problem", BAD.values(), ids=BAD.keys())
def test_a_bad_manifest_is_one_line(tmp_path, content, problem):
    path = tmp_path / "sweeps" / "bad.json"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(ManifestError) as err:
        Manifest.read(path)
    assert str(err.value) == f"{path}: not a readable sweep manifest ({problem})" and err.value.path == path
    assert "\n" not in str(err.value)


def test_the_readers_report_a_bad_manifest_and_carry_on(tmp_path, capsys):
    cfg = launch_cfg(tmp_path, tiny_sweep())
    path = Manifest.path(tmp_path, "tiny")
    path.parent.mkdir()
    path.write_text("[]")
    name, runs = sweep_runs(cfg)  # status: the sweep file's runs instead
    assert name == "tiny" and len(runs) == 4 and all(r.flops > 0 for r in runs)
    assert sweep_manifests(tmp_path) == {}  # the analysis: left out
    err = capsys.readouterr().err
    assert err.count(f"{path}: not a readable sweep manifest (a JSON list, not an object)") == 2
    assert "reading the sweep file instead (the next launch rewrites it)" in err

    decisions = decide(expand(cfg.sweep, [f"results_root={tmp_path}"]), str(tmp_path), retry_failed=False)
    first = manifest_record(str(tmp_path), "tiny", decisions, [], ["train.seed=1"])  # the launcher: replaced whole
    assert first.jobs == () and first.overrides == ("train.seed=1",) and len(first.runs) == 4
    dataclasses.replace(first, jobs=("5",)).write(tmp_path)
    assert manifest_record(str(tmp_path), "tiny", decisions, [SimpleNamespace(job_id=7)], []).jobs == ("5", "7")
    assert sweep_runs(cfg) == ("tiny", first.runs)
    assert sweep_manifests(tmp_path) == {"tiny": {r.run_id: r.label.split()[0] for r in first.runs}}
