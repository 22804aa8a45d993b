import json
import multiprocessing as mp

import pytest

from scaling.config.compose import compose_run_config
from scaling.store.results import append_jsonl, atomic_write_json, identity, read_jsonl, run_dir, run_id


def test_run_id_depends_on_what_the_run_computes_only():
    a = compose_run_config(["structure=btt", "model.width=64"])
    # where a run logs and is stored is not part of its id; the device is (tests/scaling/train/test_identity.py)
    b = compose_run_config(["structure=btt", "model.width=64", "train.log_every=3", "logger.mode=disabled",
                            "results_root=/elsewhere"])
    c = compose_run_config(["structure=btt", "model.width=64", "train.lr=0.001"])
    assert run_id(a) == run_id(b)
    assert run_id(a) != run_id(c)
    assert len(run_id(a)) == 16
    assert "logger" not in identity(a) and "results_root" not in identity(a)


def test_run_dir_rejects_anything_but_a_digest(tmp_path):
    assert run_dir(tmp_path, "0123456789abcdef") == (tmp_path / "runs" / "0123456789abcdef").resolve()
    for bad in ["../../etc", "0123456789abcde/", "ABCDEF0123456789", "x" * 16, ""]:
        with pytest.raises(ValueError):
            run_dir(tmp_path, bad)


def test_read_jsonl_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, [{"step": 1}, {"step": 2}])
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]


def _writer(args):
    path, i = args
    for k in range(50):
        atomic_write_json(path, {"writer": i, "k": k, "payload": "x" * 10_000})
    return i


def test_concurrent_atomic_writers_never_leave_a_torn_file(tmp_path):
    path = tmp_path / "summary.json"
    with mp.get_context("fork").Pool(4) as pool:
        result = pool.map_async(_writer, [(path, i) for i in range(8)])
        seen = 0
        while not result.ready():
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            assert len(json.loads(text)["payload"]) == 10_000  # a torn file would fail to parse here
            seen += 1
        result.get()
    assert seen > 0
    final = json.loads(path.read_text())
    assert final["k"] == 49 and len(final["payload"]) == 10_000
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
