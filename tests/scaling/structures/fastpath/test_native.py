"""The compiled offset GEMM (scaling/structures/fastpath/native.py, csrc/offset_gemm.c) and its token-major schedule.

The primitive is checked against torch.einsum on gathered operands for random offset tables (rows split over
threads and batch split over threads, column and row tails, accumulation), the chain with per-thread
accumulators and per-thread scratch tiles, the bounds checks that keep a wrong table from touching memory, and the
layers on it (two-core plans, and the Tensor-Train core-0 gradient) on several threads against the bmm path, saving
nothing but their input for the backward; on an AVX-512 CPU the GEMM tests run on both micro-kernels. On an x86-64
CPU with AVX2 the extension must have been built: an install that silently skipped it would otherwise leave every
layer on the slower path.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scaling.config.schema import StructureConfig
from scaling.structures import build_linear
from scaling.structures.fastpath import native
from scaling.structures.btt import btt_plan
from scaling.structures.einsum import einsum_plan
from scaling.structures.monarch import monarch_plan
from scaling.structures.fastpath.paths import PathPolicy, native_runs, native_tables, use_policy
from scaling.structures.fastpath.token_major import token_major_plan

needs_native = pytest.mark.skipif(not native_runs(), reason="the compiled offset GEMM is not available here")


@pytest.fixture(params=[1, 2])
def threads(request):
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


def cpu_has_avx2() -> bool:
    info = Path("/proc/cpuinfo")
    return info.exists() and all(f" {flag}" in info.read_text() for flag in ("avx2", "fma"))


@pytest.mark.skipif(platform.machine() not in {"x86_64", "AMD64"} or not cpu_has_avx2(), reason="x86-64 + AVX2 only")
def test_extension_is_built_and_usable_on_avx2_machines():
    assert native.available(), "pip install should have built scaling.structures._offset_gemm (is gcc installed?)"


def cpu_has_avx512() -> bool:
    info = Path("/proc/cpuinfo")
    return info.exists() and " avx512f" in info.read_text()


@needs_native
def test_the_micro_kernel_follows_the_cpu():
    assert native.vector_bits() == (512 if cpu_has_avx512() and os.environ.get("SCALING_NATIVE_AVX512") != "0" else 256)


@needs_native
@pytest.mark.skipif(not cpu_has_avx512(), reason="the AVX2 kernel is the default without AVX-512")
def test_the_avx2_kernel_where_avx512_is_the_default():
    """SCALING_NATIVE_AVX512=0 keeps the AVX2 micro-kernel: the GEMM tests run again on it, in a fresh process (the
    kernel is picked when the library loads)."""
    env = {**os.environ, "SCALING_NATIVE_AVX512": "0"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                           "micro_kernel_follows or gemm_matches_einsum or chain_runs_tiles"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_switched_off_by_environment():
    assert not PathPolicy.from_environment({"SCALING_NATIVE": "0"}).native
    assert PathPolicy.from_environment({}).native


def random_problem(nb: int, m: int, n: int, k: int, seed: int):
    """A, B, C storage with shuffled offset tables, and the expected C from a dense gather + einsum."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(nb * m * k + 7, generator=gen)
    b = torch.randn(nb * k * n + 3, generator=gen)
    # A: a random (b, m, k) -> position layout built from per-axis strides of a permuted axis order
    order = torch.randperm(3, generator=gen).tolist()
    sizes = (nb, m, k)
    strides = [0, 0, 0]
    step = 1
    for axis in reversed(order):
        strides[axis] = step
        step *= sizes[axis]
    a_b, a_m, a_k = (torch.arange(s, dtype=torch.int64) * st for s, st in zip(sizes, strides))
    a_b = a_b + 5  # an offset base inside the storage
    b_b = torch.randperm(nb, generator=gen).to(torch.int64) * (k * n)
    b_k = torch.randperm(k, generator=gen).to(torch.int64) * n
    c_b = torch.arange(nb, dtype=torch.int64) * n  # entries interleaved within rows, disjoint
    c_m = torch.arange(m, dtype=torch.int64) * (nb * n + 2)
    c = torch.randn(m * (nb * n + 2), generator=gen)
    A = a[a_b[:, None, None] + a_m[None, :, None] + a_k[None, None, :]]  # (nb, m, k)
    B = b[b_b[:, None, None] + b_k[None, :, None] + torch.arange(n)[None, None, :]]  # (nb, k, n)
    expected = torch.einsum("bmk,bkn->bmn", A.double(), B.double())
    tables = [native.offsets(t) for t in (a_b, a_m, a_k, b_b, b_k, c_b, c_m)]
    op = native.Gemm(a, *tables[:3], b, *tables[3:5], c, *tables[5:], n)
    index = c_b[:, None, None] + c_m[None, :, None] + torch.arange(n)[None, None, :]
    return op, expected, index


@needs_native
@pytest.mark.parametrize(
    "nb,m,n,k", [(3, 200, 32, 17), (40, 7, 16, 300), (5, 13, 5, 9), (2, 64, 21, 40), (33, 30, 40, 3), (1, 1, 1, 1)]
)
def test_gemm_matches_einsum(nb, m, n, k, threads):
    op, expected, index = random_problem(nb, m, n, k, seed=nb * 1000 + m)
    before = op.C.clone()
    native.gemm(op)
    torch.testing.assert_close(op.C[index].double(), expected, rtol=1e-5, atol=1e-4)
    untouched = torch.ones_like(op.C, dtype=torch.bool)
    untouched[index.reshape(-1)] = False
    assert torch.equal(op.C[untouched], before[untouched])  # nothing outside the addressed entries is written
    op.accumulate = True
    native.gemm(op)
    torch.testing.assert_close(op.C[index].double(), 2 * expected, rtol=1e-5, atol=1e-4)


@needs_native
@pytest.mark.parametrize("rows,width", [(1, 5), (3, 37), (1000, 1024)])
def test_row_dots_match_a_float64_sum(rows, width, threads):
    gen = torch.Generator().manual_seed(rows)
    a, b = (torch.randn(rows, width, generator=gen) for _ in range(2))
    got = native.row_dots(a, b.t().contiguous().t())  # any strides: made contiguous
    exact = (a.double() * b.double()).sum(-1)
    assert got.dtype == torch.float32 and got.shape == (rows,)
    assert ((got.double() - exact).abs() <= 1e-6 * (a.double() * b.double()).abs().sum(-1)).all()


def routed_slots(tokens: int, k: int, experts: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens of the slots sorted by expert, slots (tokens, k) of each token) as routed_two_core_apply makes them."""
    gen = torch.Generator().manual_seed(seed)
    flat = torch.stack([torch.randperm(experts, generator=gen)[:k] for _ in range(tokens)]).reshape(-1)
    order = torch.argsort(flat, stable=True)
    slots = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel()))
    return order // k, slots.view(tokens, k)


@needs_native
@pytest.mark.parametrize("tokens,k,width", [(1, 1, 3), (37, 2, 20), (300, 3, 1024)])
def test_combine_adds_each_tokens_slots_back_as_index_add_does(tokens, k, width, threads):
    slot_tokens, slots = routed_slots(tokens, k, 5, seed=tokens)
    gen = torch.Generator().manual_seed(1)
    rows, weights = torch.randn(tokens * k, width, generator=gen), torch.rand(tokens * k, generator=gen)
    for w in (None, weights):
        source = rows.double() if w is None else rows.double() * w.double()[:, None]
        want = torch.zeros(tokens, width, dtype=torch.float64).index_add_(0, slot_tokens, source)
        torch.testing.assert_close(native.combine(rows, slots, w).double(), want, rtol=1e-6, atol=1e-6)


@needs_native
def test_thread_pool_serves_changing_thread_counts_and_concurrent_callers():
    """The extension's worker threads persist between calls (csrc/fan_out.h): calls with 3, 1 and 2 threads, and
    calls from four Python threads at once (ctypes releases the GIL; one fan-out runs at a time), all compute the
    same product."""
    import threading

    op, expected, index = random_problem(6, 300, 32, 40, seed=7)
    previous = torch.get_num_threads()
    try:
        for count in (3, 1, 2):
            torch.set_num_threads(count)
            native.gemm(op)
            torch.testing.assert_close(op.C[index].double(), expected, rtol=1e-5, atol=1e-4)
        a, b = torch.randn(500, 300), torch.randn(500, 300)
        want = (a.double() * b.double()).sum(-1)
        results = [None] * 4

        def work(i: int) -> None:
            results[i] = [native.row_dots(a, b) for _ in range(20)]

        callers = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in callers:
            t.start()
        for t in callers:
            t.join(timeout=60)
        assert all(r is not None and len(r) == 20 for r in results)
        for got in (g for r in results for g in r):
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)
    finally:
        torch.set_num_threads(previous)


FORK_SCRIPT = """
import os, sys, torch
from scaling.structures.fastpath import native
torch.set_num_threads(2)
a, b = torch.randn(4000, 256), torch.randn(4000, 256)
want = native.row_dots(a, b)  # the parent's pool now has a worker
pid = os.fork()
if pid == 0:  # the child has no worker threads: its pool must start afresh, not wait for the parent's
    torch.set_num_threads(2)  # (torch may reset it in a child)
    os._exit(0 if torch.equal(native.row_dots(a, b), want) else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@needs_native
def test_thread_pool_works_in_a_forked_child():
    done = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@needs_native
def test_chain_runs_tiles_with_private_accumulators(threads):
    """y = x W1 W2 per tile, and dW = sum_t x^T y summed over tokens into one accumulator per thread."""
    gen = torch.Generator().manual_seed(0)
    tokens, d, h = 101, 24, 40
    x = torch.randn(tokens, d, generator=gen)
    w1, w2 = torch.randn(d, h, generator=gen), torch.randn(h, d, generator=gen)
    z, y = torch.empty(tokens, h), torch.empty(tokens, d)
    acc = torch.zeros(threads, d, d)
    one, steps = native.steps(1, 0), native.steps
    ops = [
        native.Gemm(x, one, steps(tokens, d), steps(d, 1), w1, one, steps(d, h), z, one, steps(tokens, h), h),
        native.Gemm(z, one, steps(tokens, h), steps(h, 1), w2, one, steps(h, d), y, one, steps(tokens, d), d),
        native.Gemm(x, one, steps(d, 1), steps(tokens, d), y, one, steps(tokens, d), acc, one, steps(d, d), d,
                    terms_per_token=1, private=True),
    ]
    native.chain(ops, tokens, tile=8)
    want_y = x.double() @ w1.double() @ w2.double()
    torch.testing.assert_close(y.double(), want_y, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(acc.sum(0).double(), x.double().T @ y.double(), rtol=1e-5, atol=1e-2)


@needs_native
@pytest.mark.parametrize("tokens,tile", [(101, 8), (64, 16), (5, 8)])
def test_chain_passes_a_tile_through_per_thread_scratch(tokens, tile, threads):
    """As above with z only in a (threads, tile, h) scratch: written as a private C, read as a private A, row
    tables repeating every tile; dW = sum_t z^T y reads the scratch too."""
    gen = torch.Generator().manual_seed(1)
    d, h = 24, 40
    x = torch.randn(tokens, d, generator=gen)
    w1, w2 = torch.randn(d, h, generator=gen), torch.randn(h, d, generator=gen)
    z, y = torch.full((threads, tile, h), float("nan")), torch.empty(tokens, d)
    acc = torch.zeros(threads, h, d)
    one, steps, rows = native.steps(1, 0), native.steps, native.tile_steps(tokens, tile, h)
    ops = [
        native.Gemm(x, one, steps(tokens, d), steps(d, 1), w1, one, steps(d, h), z, one, rows, h, private=True),
        native.Gemm(z, one, rows, steps(h, 1), w2, one, steps(h, d), y, one, steps(tokens, d), d, private_a=True),
        native.Gemm(z, one, steps(h, 1), rows, y, one, steps(tokens, d), acc, one, steps(h, d), d,
                    terms_per_token=1, private=True, private_a=True),
    ]
    native.chain(ops, tokens, tile=tile)
    want_z = x.double() @ w1.double()
    torch.testing.assert_close(y.double(), want_z @ w2.double(), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(acc.sum(0).double(), want_z.T @ y.double(), rtol=1e-5, atol=1e-2)
    with pytest.raises(ValueError, match="one slice per thread"):  # a scratch short of the threads' slices
        native.chain([native.Gemm(**{**vars(ops[1]), "A": z[: threads - 1]})], tokens, tile=tile)


@needs_native
def test_bad_tables_raise_before_touching_memory():
    op, _, _ = random_problem(3, 10, 8, 5, seed=1)
    shifted = native.offsets(op.a_k.table + op.A.numel())
    too_far = native.Gemm(**{**vars(op), "a_k": shifted})
    with pytest.raises(ValueError, match="A's offsets reach"):
        native.gemm(too_far)
    negative = native.Gemm(**{**vars(op), "c_m": native.offsets(op.c_m.table - 1)})
    with pytest.raises(ValueError, match="C's offsets reach"):
        native.gemm(negative)
    with pytest.raises(ValueError, match="table sizes disagree"):
        native.gemm(native.Gemm(**{**vars(op), "b_k": native.offsets(op.b_k.table[:-1])}))
    with pytest.raises(ValueError, match="float32"):
        native.gemm(native.Gemm(**{**vars(op), "B": op.B.double()}))
    with pytest.raises(ValueError, match="private accumulators"):
        native.chain([native.Gemm(**{**vars(op), "terms_per_token": 1})], tokens=5, tile=2)
    for flag in ("private", "private_a"):
        with pytest.raises(ValueError, match="belong to chain"):
            native.gemm(native.Gemm(**{**vars(op), flag: True}))
    none = native.steps(0, 1)
    no_rows = native.Gemm(**{**vars(op), "a_m": none, "c_m": none})
    assert native.gemm(no_rows) is no_rows.C  # empty tables: nothing to do, and no error


def test_plans_without_a_token_major_form_stay_on_bmm():
    policy = PathPolicy()
    assert token_major_plan(btt_plan(8, 8, 8, 8, 2)) is not None
    assert token_major_plan(monarch_plan(64, 64, 4, 16, 16, 16)) is not None  # 4 blocks divide the middle 16
    assert token_major_plan(monarch_plan(30, 28, 4, 8, 5, 7)) is None  # 4 blocks, middle 5: dz's shuffle cuts axes
    b_first = einsum_plan((2, 3, 4, 2, 3, 2, 2), 24, 12, a_first=False)  # contracts x's middle axis first
    assert token_major_plan(b_first) is None
    wide = btt_plan(8, 8, 8, 8, 4)  # middle 4x the ends: the bmm schedule measured faster
    assert native_tables(wide, torch.zeros(1 << 19, 1), policy) is None
    small, large = torch.zeros(100, 64), torch.zeros(1 << 13, 64)  # below / at native_min_elements
    assert native_tables(btt_plan(8, 8, 8, 8, 1), small, policy) is None
    assert native_tables(btt_plan(8, 8, 8, 8, 1), large, policy) is not None or not native.available()
    odd = monarch_plan(384, 384, 20, 20, 20, 20)  # 20-wide blocks: part of a register wasted on every strip
    assert token_major_plan(odd) is not None and native_tables(odd, torch.zeros(1 << 13, 384), policy) is None


def native_and_bmm_results(layer, x: torch.Tensor, monkeypatch, entry: str) -> tuple[list, list, int]:
    """Output and gradients of layer on x with the compiled GEMM on and off, and how many times native.<entry>
    ran. Every call takes a fused Function, however small or odd-sized."""
    calls = []
    monkeypatch.setattr(native, entry, lambda *args, run=getattr(native, entry): calls.append(1) or run(*args))
    results = []
    for on in (True, False):
        policy = PathPolicy(native=on, fused_min_elements=0, native_min_elements=0, native_column_multiple=1)
        layer.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        with use_policy(policy):
            y = layer(xi)
            (y * torch.linspace(-1, 1, y.numel()).view(y.shape)).sum().backward()
        results.append([y.detach(), xi.grad, *(p.grad for p in layer.parameters())])
        if on:
            ran = len(calls)
    assert len(calls) == ran  # nothing ran on it with the compiled GEMM off
    return results[0], results[1], ran


@needs_native
@pytest.mark.parametrize("cfg,d_in,d_out,entry,calls", [
    (StructureConfig("btt"), 256, 256, "chain", 2),  # the forward's chain and the backward's
    (StructureConfig("btt", rank=2), 192, 128, "chain", 2),
    (StructureConfig("monarch", blocks=3), 25, 31, "chain", 2),  # padded input (27), truncated output (33)
    (StructureConfig("einsum", theta=[0.5, 0, 0.5, 0, 0.5, 0.5, 0.25]), 64, 256, "chain", 2),  # carried axes
    (StructureConfig("kron"), 64, 128, "gemm", 1),  # the core-0 gradient, reading dz in place (one chunk)
    (StructureConfig("tt", rank=3), 96, 48, "gemm", 1),
])
def test_layers_on_several_threads_match_the_bmm_path(cfg, d_in, d_out, entry, calls, threads, monkeypatch):
    torch.manual_seed(0)
    layer = build_linear(cfg, d_in, d_out)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    compiled, bmm, ran = native_and_bmm_results(layer, torch.randn(333, d_in), monkeypatch, entry)
    assert ran == calls  # the compiled GEMM ran
    for got, want in zip(compiled, bmm):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)


@needs_native
@pytest.mark.parametrize("cfg,d", [(StructureConfig("btt"), 256), (StructureConfig("monarch", blocks=4), 64)])
def test_the_native_path_saves_only_its_input_for_the_backward(cfg, d):
    """The middle z is recomputed tile by tile in the backward: the layer keeps x and its weights, nothing else."""
    layer = build_linear(cfg, d, d)
    x = torch.randn(300, d, requires_grad=True)
    saved = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    policy = PathPolicy(fused_min_elements=0, native_min_elements=0, native_column_multiple=1)
    with use_policy(policy), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    weights = sum(p.numel() for p in layer.parameters())
    assert x.numel() <= sum(saved) <= x.numel() + weights
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in layer.parameters())
