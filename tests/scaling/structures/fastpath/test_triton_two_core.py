"""The Triton path (scaling/structures/fastpath/triton_two_core.py) on Triton's CPU interpreter, and its choice.

The kernels run under TRITON_INTERPRET=1 on CPU tensors in float32 (the interpreter is numpy-backed: no bf16), at
the widths the sweeps use, token counts not a multiple of the tile: each layer's output and the gradients of its
input and both cores against the plain-ops path (kernels.reference_apply, itself checked against each
structure's einsum formula in test_kernels.py), within 1e-5 of the largest reference value. bf16 numerics and
speed need a GPU and are not tested here. select_path's CUDA choice is covered through its predicate,
paths.triton_chosen, on its inputs.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

from scaling.config.schema import StructureConfig
from scaling.structures import build_linear
from scaling.structures.btt import btt_plan
from scaling.structures.einsum import Einsum
from scaling.structures.fastpath import kernels
from scaling.structures.fastpath import paths
from scaling.structures.fastpath.paths import (
    Path, PathPolicy, select_path, triton_chosen, triton_supports, use_policy,
)
from scaling.structures.monarch import monarch_plan

S = StructureConfig
MODULE = "scaling.structures.fastpath.triton_two_core"
TOKENS = 100  # not a multiple of the 64-token tile


@pytest.fixture(scope="module")
def interpreted():
    """triton_two_core imported afresh with TRITON_INTERPRET=1 (the jit decorators read it), dropped afterwards so
    a later import in this process compiles for the GPU."""
    pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[gpu]')")
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    drop()
    try:
        yield importlib.import_module(MODULE)
    finally:
        drop()
        if previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = previous


def drop() -> None:
    """Forget triton_two_core (sys.modules and the package attribute `from fastpath import ...` reads first)."""
    sys.modules.pop(MODULE, None)
    package = sys.modules["scaling.structures.fastpath"]
    if hasattr(package, "triton_two_core"):
        delattr(package, "triton_two_core")


def outputs_and_grads(layer, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The output and the gradients of x and every parameter for a fixed output weighting."""
    layer.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    y = layer(x)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    return {"y": y.detach(), "x": x.grad} | {name: p.grad for name, p in layer.named_parameters()}


def assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """Every tensor within 1e-5 of the largest reference value (fp32 sums in another order)."""
    for name, expected in want.items():
        scale = expected.abs().max().item()
        torch.testing.assert_close(got[name], expected, rtol=0, atol=1e-5 * scale, msg=name)


def compare(layer, monkeypatch, tokens: int = TOKENS) -> None:
    """layer's output and gradients on the Triton path (select_path forced to TRITON) against plain ops."""
    with torch.no_grad():  # O(1) entries everywhere (zero-init factors would hide gradient errors)
        for p in layer.parameters():
            p.normal_()
    x = torch.randn(tokens, layer.d_in)
    with use_policy(PathPolicy(fused=False)):
        want = outputs_and_grads(layer, x)
    monkeypatch.setattr(kernels, "select_path", lambda *args, **kwargs: Path.TRITON)
    assert_close(outputs_and_grads(layer, x), want)


FAST = [(S("btt"), 64), (S("btt", rank=2), 64), (S("monarch", blocks=4), 64), (S("btt"), 96),
        (S("btt", rank=2), 96), (S("monarch", blocks=4), 96), (S("monarch", blocks=4), 256)]
SLOW = [(S("btt"), 256), (S("btt", rank=2), 256)]  # about 9 s each on a loaded 2-core machine


@pytest.mark.parametrize(
    "cfg, d", FAST + [pytest.param(*case, marks=pytest.mark.slow) for case in SLOW],
    ids=lambda v: f"{v.name}-r{v.rank}-b{v.blocks}" if isinstance(v, StructureConfig) else str(v),
)
def test_layer_matches_plain_ops(interpreted, monkeypatch, cfg, d):
    torch.manual_seed(0)
    compare(build_linear(cfg, d, d), monkeypatch)


def test_rectangular_padded_monarch(interpreted, monkeypatch):
    """Monarch whose blocks divide neither width: zero-padded input columns, dropped output columns."""
    torch.manual_seed(0)
    compare(build_linear(S("monarch", blocks=5), 64, 48), monkeypatch, tokens=70)


@pytest.mark.parametrize("fused", [True, False])
def test_fused_and_two_kernel_forward_agree(interpreted, fused):
    """Both forward schedules write the same z and y (the automatic choice takes one per plan)."""
    torch.manual_seed(0)
    plan = btt_plan(8, 8, 8, 8, 2)
    x, w0, w1 = torch.randn(TOKENS, 64), torch.randn(plan.core1[:3]), torch.randn(plan.core2[:3])
    z, y = interpreted.forward(x, w0, w1, plan, fused=fused)
    want = kernels.reference_apply(x, w0, w1, plan)
    torch.testing.assert_close(y, want, rtol=0, atol=1e-5 * want.abs().max().item())
    z_want = torch.einsum("nbk,bpk->nbp", x.view(-1, 8, 8), w0).reshape(TOKENS, -1)
    torch.testing.assert_close(z, z_want, rtol=0, atol=1e-5 * z_want.abs().max().item())


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True)])
def test_backward_computes_only_what_is_needed(interpreted, needs):
    torch.manual_seed(0)
    plan = monarch_plan(64, 64, 4, 16, 16, 16)
    x, w0, w1 = (torch.randn(shape, requires_grad=need)
                 for shape, need in zip([(TOKENS, 64), plan.core1[:3], plan.core2[:3]], needs))
    y = interpreted.apply(x, w0, w1, plan)
    g = torch.randn_like(y)
    (got,) = torch.autograd.grad(y, [t for t in (x, w0, w1) if t.requires_grad], g)
    (want,) = torch.autograd.grad(kernels.reference_apply(x, w0, w1, plan), [t for t in (x, w0, w1)
                                                                             if t.requires_grad], g)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * want.abs().max().item())


def test_no_tokens(interpreted):
    plan = btt_plan(8, 8, 8, 8, 1)
    x, w0, w1 = (torch.zeros(shape, requires_grad=True) for shape in [(0, 64), plan.core1[:3], plan.core2[:3]])
    y = interpreted.apply(x, w0, w1, plan)
    y.sum().backward()
    assert y.shape == (0, 64) and not w0.grad.any() and not w1.grad.any()


# --- the choice (no CUDA here: the predicate on its inputs) -----------------------------------------------------
@pytest.mark.parametrize("device, dtype, available, supported, watched, policy, chosen", [
    ("cuda", torch.float32, True, True, False, PathPolicy(), True),
    ("cuda", torch.bfloat16, True, True, False, PathPolicy(), True),  # the autocast dtype under CUDA bf16 autocast
    ("cuda", torch.float16, True, True, False, PathPolicy(), True),
    ("cuda", torch.float64, True, True, False, PathPolicy(), False),
    ("cpu", torch.float32, True, True, False, PathPolicy(), False),
    ("mps", torch.float32, True, True, False, PathPolicy(), False),
    ("cuda", torch.float32, False, True, False, PathPolicy(), False),  # triton not importable
    ("cuda", torch.float32, True, False, False, PathPolicy(), False),  # plan not supported
    ("cuda", torch.float32, True, True, True, PathPolicy(), False),  # FlopCounterMode counting
    ("cuda", torch.float32, True, True, False, PathPolicy(triton=False), False),  # SCALING_TRITON=0
    ("cuda", torch.float32, True, True, False, PathPolicy(fused=False), False),  # plain ops everywhere
])
def test_triton_chosen(device, dtype, available, supported, watched, policy, chosen):
    assert triton_chosen(device, dtype, available, supported, watched, policy) is chosen


def test_scaling_triton_switches_it_off():
    assert PathPolicy.from_environment({"SCALING_TRITON": "0"}).triton is False
    assert PathPolicy.from_environment({}).triton is True


def test_supported_plans():
    assert triton_supports(btt_plan(16, 16, 16, 16, 2)) and triton_supports(monarch_plan(96, 96, 4, 24, 24, 24))
    assert not triton_supports(btt_plan(4, 256, 4, 256, 1))  # a block wider than TRITON_MAX_BLOCK
    carried = build_linear(S("einsum", theta=[0.25, 0.25, 0.5, 0.25, 0.25, 0.5, 0.25]), 256, 256)
    assert isinstance(carried, Einsum) and not triton_supports(carried.plan)  # c1 > 1: carried columns


def test_other_devices_keep_plain_ops():
    """A device other than the CPU and CUDA (here meta) takes plain ops, as before."""
    x = torch.empty(4, 64, device="meta")
    assert select_path(btt_plan(8, 8, 8, 8, 1), x, PathPolicy()) is Path.REFERENCE


def test_triton_available_is_false_where_it_cannot_import(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton raises ImportError
    paths.triton_available.cache_clear()
    try:
        assert paths.triton_available() is False
    finally:
        paths.triton_available.cache_clear()

