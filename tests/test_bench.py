"""The benchmarks in bench/ run end to end as scripts (tiny shapes) and report consistent numbers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scaling.structures.fastpath.paths import native_runs

BENCH = Path(__file__).resolve().parents[1] / "bench"
pytestmark = pytest.mark.slow  # each test starts a benchmark process


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(BENCH / script), *args]
    return subprocess.run(command, cwd=BENCH, capture_output=True, text=True, check=False, timeout=300)


def bench_json(script: str, *args: str) -> dict:
    done = run_bench(script, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("precision", [["fp32"], ["bf16"], ["fp32", "bf16"]], ids="+".join)
def test_layers_reports_every_structure_against_dense_in_each_precision(precision):
    out = bench_json("layers.py", "--widths", "64", "--tokens", "128", "--warmup", "1", "--repeats", "2",
                     "--structures", "btt", "kron", "--device", "cpu", "--precision", *precision)
    assert (out["device"], out["precisions"]) == ("cpu", precision)
    paths = out["paths"]
    assert paths == (["native", "bmm"] if native_runs() else ["bmm"])  # the CPU paths run in bf16 too
    rows = {(r["structure"], r["precision"]): r for r in out["rows"]}
    names = {"dense", "btt", "kron"} | ({"btt [bmm]", "kron [bmm]"} if len(paths) == 2 else set())
    assert set(rows) == {(n, p) for n in names for p in precision}
    assert out["copy_gbs"] > 0
    for (name, p), r in rows.items():
        dense = rows["dense", p]
        assert dense["gflops_vs_dense"] == 1.0 and dense["flops_per_token"] == 2 * 64 * 64
        assert r["ms"] > 0 and r["gflops"] == pytest.approx(3 * r["flops_per_token"] * 128 / r["ms"] / 1e6)
        assert r["speedup_vs_dense"] == pytest.approx(dense["ms"] / r["ms"])
        bytes_per = {"fp32": 4, "bf16": 2}[p]  # x read twice, y written, dy read, dx written
        assert r["limit_ms"] == pytest.approx(128 * 5 * 64 * bytes_per / (out["copy_gbs"] * 1e9) * 1e3)


def test_train_reports_throughput_and_utilisation_in_both_precisions():
    out = bench_json("train.py", "--width", "64", "--depth", "1", "--context", "16", "--batch", "2", "--warmup", "0",
                     "--repeats", "1", "--structures", "btt", "--device", "cpu", "--gemm-size", "128",
                     "--peak-tflops", "0.5")
    assert (out["device_name"], out["precisions"], out["peak_tflops"]) == ("CPU", ["fp32", "bf16"], 0.5)
    assert out["copy_gbs"] > 0
    rows = {(r["structure"], r["precision"]): r for r in out["rows"]}
    assert set(rows) == {(s, p) for s in ("dense", "btt") for p in ("fp32", "bf16")}
    for (_, p), r in rows.items():
        assert rows["dense", p]["speedup_vs_dense"] == 1.0
        assert r["tokens_per_s"] == pytest.approx(2 * 16 / (r["step_ms"] / 1e3))
        assert r["mfu"] == pytest.approx(r["gflops"] / 500)
        assert r["x_gemm"] == pytest.approx(r["gflops"] / (out["gemm_tflops"][p] * 1e3))


def test_train_layers_free_times_each_structure_with_its_layers_replaced():
    out = bench_json("train.py", "--width", "64", "--depth", "1", "--context", "16", "--batch", "2", "--warmup", "0",
                     "--repeats", "1", "--structures", "btt", "--device", "cpu", "--precision", "bf16",
                     "--gemm-size", "128", "--layers-free")
    rows = {r["structure"]: r for r in out["rows"]}
    assert set(rows) == {"dense", "btt", "btt [layers free]"}
    free, btt = rows["btt [layers free]"], rows["btt"]
    assert (free["params"], free["train_flops_per_token"]) == (btt["params"], btt["train_flops_per_token"])
    assert free["speedup_vs_dense"] == pytest.approx(rows["dense"]["step_ms"] / free["step_ms"])


def test_free_structured_layers_return_zeros_and_zero_gradients_in_the_layer_dtype(monkeypatch):
    import torch

    from scaling.config.schema import StructureConfig
    from scaling.structures import build_linear

    monkeypatch.syspath_prepend(str(BENCH))  # bench/train.py imports its neighbour common.py
    spec = importlib.util.spec_from_file_location("bench_train", BENCH / "train.py")
    bench_train = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_train", bench_train)  # its dataclass looks itself up there
    spec.loader.exec_module(bench_train)
    model = torch.nn.Sequential(build_linear(StructureConfig("btt"), 64, 128),
                                build_linear(StructureConfig("dense"), 128, 8))
    assert bench_train.free_structured_layers(model) == 1
    x = torch.randn(5, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model[0](x)
        model(x).float().sum().backward()
    assert hidden.dtype == torch.bfloat16 and hidden.shape == (5, 128) and not hidden.any()
    assert x.grad is not None and not x.grad.any()
    assert all(p.grad is not None and not p.grad.any() for p in model[0].parameters())
    assert model[1].weight.grad.abs().sum() == 0  # the dense layer ran for real, on the stand-in's zeros


def test_train_without_a_known_peak_leaves_mfu_blank():
    out = bench_json("train.py", "--width", "64", "--depth", "1", "--context", "16", "--batch", "2", "--warmup", "0",
                     "--repeats", "1", "--structures", "low_rank", "--device", "cpu", "--gemm-size", "128")
    assert out["peak_tflops"] is None and all(r["mfu"] is None for r in out["rows"])


def test_asking_for_cuda_without_one_names_the_fix():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = run_bench("layers.py", "--device", "cuda", "--widths", "64")
    assert done.returncode != 0 and "--device cpu" in done.stderr


def test_moe_reports_routed_against_all_experts():
    out = bench_json("moe.py", "--widths", "64", "--tokens", "256", "--experts", "4", "--top-k", "1", "--warmup", "1",
                     "--repeats", "2")
    (row,) = out["rows"]
    assert 0.25 < row["flop_ratio"] < 0.5  # a quarter of the experts, plus the router all of them share
    assert row["time_ratio"] == pytest.approx(row["routed_ms"] / row["all_ms"])


@pytest.mark.skipif(not native_runs(), reason="the native offset GEMM is not available here")
def test_gemms_profiles_the_six_gemms_of_a_btt_step():
    out = bench_json("gemms.py", "--width", "64", "--tokens", "64", "--repeats", "2")
    assert sorted({r["gemm"] for r in out["rows"]}) == sorted(["core1", "core2", "dw1", "dz", "dw0", "dx"])
    assert {r["setting"] for r in out["rows"]} == {"hot", "cold"} and all(r["ms"] > 0 for r in out["rows"])



def test_the_timing_order_is_a_new_permutation_each_repeat():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    keys = ["dense", "btt", "btt [bmm]", "monarch", "monarch [bmm]"]
    orders = [common.shuffled(keys, i) for i in range(12)]
    assert all(sorted(order) == sorted(keys) for order in orders)
    assert orders == [common.shuffled(keys, i) for i in range(12)]  # seeded: the same orders every run
    before_btt = {order[order.index("btt") - 1] for order in orders if order[0] != "btt"}
    assert len(before_btt) >= 3  # not always after the same layer (a fixed order put it after dense every time)
    assert common.shuffled([], 3) == []
