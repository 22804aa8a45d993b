"""The contract every registered structure keeps (its conf/structure preset, square and rectangular shapes):
its declared settings (real StructureConfig fields whose ranges take the preset's values and refuse values out of
range; the preset sets nothing else), output shapes, parameter counts from its factors, FLOPs against torch's
FlopCounterMode, init std, the structure-aware learning-rate multipliers, gradients against its own materialised
dense matrix, agreement of its fast and reference paths (fp32, and under bf16 autocast on both bf16 compute
paths), and a meta-device build. A newly registered structure is
checked without editing this file (it needs a preset; docs/adding_a_structure.md)."""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

import scaling.structures
import structure_presets
from scaling.config.rules import Rule
from scaling.config.schema import StructureConfig
from scaling.mup.parametrization import param_rules
from scaling.structures import (
    GENERIC_SETTINGS, REGISTRY, StructuredLinear, StructureError, build_linear, check_settings, spectral_std,
)
from scaling.structures.fastpath.paths import PathPolicy, use_policy
from structure_presets import PRESETS, structure_config

NAMES = sorted(REGISTRY)
SHAPES = [(64, 64), (64, 96), (96, 64)]  # square, wider, narrower
FIELDS = {f.name: f.default for f in dataclasses.fields(StructureConfig)}
# Per StructureConfig field: a value outside every declared range, and a value inside it that is not the default.
OUT_OF_RANGE = {"rank": 0, "rank_frac": 1.0, "cores": 1, "layout": "bogus", "blocks": 0, "theta": [2, 0, 0, 1, 0, 0, 0],
                "experts": 0, "top_k": 0}
OTHER_VALUE = {"rank": 2, "rank_frac": 0.5, "cores": 3, "layout": "balanced", "blocks": 4,
               "theta": [0.5, 0.5, 0, 0.5, 0.5, 0, 0], "experts": 4, "top_k": 1}
GUIDE = Path(__file__).resolve().parents[3] / "docs" / "adding_a_structure.md"
pytestmark = pytest.mark.usefixtures("one_thread")


def build(name: str, d_in: int, d_out: int, bias: bool = True, seed: int = 0) -> StructuredLinear:
    torch.manual_seed(seed)
    return build_linear(structure_config(name), d_in, d_out, bias)


def non_factors(layer: StructuredLinear) -> dict[str, torch.nn.Parameter]:
    factors = {spec.name for spec in layer.factor_specs()}
    return {n: p for n, p in layer.named_parameters() if n not in factors}


def dense_matrix(layer: StructuredLinear) -> torch.Tensor:
    """W (d_out, d_in) with layer(x) = x W^T + b, read off the layer applied to the identity (differentiable in the
    layer's parameters)."""
    out = layer(torch.eye(layer.d_in))
    return (out if layer.bias is None else out - layer.bias).T


def test_every_registered_structure_has_a_preset():
    assert NAMES == sorted(p.stem for p in PRESETS.glob("*.yaml"))
    assert {"dense", "low_rank", "kron", "tt", "monarch", "btt", "btt_norm", "einsum", "einsum_norm", "btt_moe",
            "btt_moe_norm"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_declared_settings_are_structure_config_fields_with_ranges(name):
    settings = REGISTRY[name].settings
    assert set(settings) <= set(FIELDS) - set(GENERIC_SETTINGS)
    assert all(isinstance(rule, Rule) and rule.want for rule in settings.values())


def test_every_structure_field_is_generic_or_declared_by_a_structure():
    declared = {field for cls in REGISTRY.values() for field in cls.settings}
    assert declared | set(GENERIC_SETTINGS) == set(FIELDS)
    assert set(OUT_OF_RANGE) == set(OTHER_VALUE) == declared  # a new field needs its two test values here


@pytest.mark.parametrize("name", NAMES)
def test_preset_sets_only_its_declared_or_generic_settings(name):
    preset = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
    assert preset["name"] == name
    assert set(preset) <= set(REGISTRY[name].settings) | set(GENERIC_SETTINGS)
    check_settings(structure_config(name))


@pytest.mark.parametrize("name", NAMES)
def test_declared_ranges_take_the_preset_and_refuse_values_out_of_range(name):
    cfg = structure_config(name)
    for field, rule in REGISTRY[name].settings.items():
        assert rule.ok(getattr(cfg, field)), field
        bad = OUT_OF_RANGE[field]
        assert not rule.ok(bad), field
        with pytest.raises(StructureError, match=rf"^structure\.{field}=.* is out of range: it must be "):
            check_settings(dataclasses.replace(cfg, **{field: bad}))


@pytest.mark.parametrize("name", NAMES)
def test_a_setting_it_does_not_declare_is_refused_unless_left_at_its_default(name):
    """Another value would only give an identical run a second run id; the message names the field and what the
    structure takes."""
    cfg = structure_config(name)
    takes = ", ".join(REGISTRY[name].settings) or "no settings"
    for field in set(OTHER_VALUE) - set(REGISTRY[name].settings):
        assert getattr(cfg, field) == FIELDS[field], field
        with pytest.raises(StructureError, match=rf"^structure\.{field}=.* is not a setting of {name}; "
                                                 rf"{name} takes {takes}$"):
            check_settings(dataclasses.replace(cfg, **{field: OTHER_VALUE[field]}))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", NAMES)
def test_output_shape_for_any_leading_dims(name, shape):
    d_in, d_out = shape
    layer = build(name, d_in, d_out)
    for lead in [(), (7,), (2, 3, 5)]:
        assert layer(torch.randn(*lead, d_in)).shape == (*lead, d_out)
    x = torch.randn(d_in, 6).T  # not contiguous
    torch.testing.assert_close(layer(x), layer(x.contiguous()))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", NAMES)
def test_parameters_are_the_declared_factors_plus_bias_scalars_and_gates(name, shape):
    """Each factor is a whole number of dense fan_in x fan_out maps with the declared shape; everything else is the
    bias, a scalar (gamma, one-element core) or a gate reading the layer input (a router)."""
    d_in, d_out = shape
    layer = build(name, d_in, d_out)
    specs = layer.factor_specs()
    assert len({s.name for s in specs}) == len(specs) >= 1
    for spec in specs:
        p = getattr(layer, spec.name)
        assert isinstance(p, torch.nn.Parameter) and tuple(p.shape) == spec.shape, spec.name
        assert p.numel() % (spec.fan_in * spec.fan_out) == 0, spec.name
    others = non_factors(layer)
    assert tuple(others.pop("bias").shape) == (d_out,)
    for n, p in others.items():
        assert p.numel() == 1 or (p.ndim == 2 and p.shape[1] == d_in), n
    factor_params = sum(math.prod(s.shape) for s in specs)
    assert layer.num_params() == factor_params + d_out + sum(p.numel() for p in others.values())
    assert build(name, d_in, d_out, bias=False).num_params() == layer.num_params() - d_out


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", NAMES)
def test_flops_match_flop_counter(name, shape):
    d_in, d_out = shape
    layer = build(name, d_in, d_out)
    tokens = 24
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(2, tokens // 2, d_in))
    assert counter.get_total_flops() / tokens == pytest.approx(layer.flops_per_token(), rel=0.01)


@pytest.mark.parametrize("name", NAMES)
def test_factors_start_at_their_spectral_std_and_the_rest_at_its_own_init(name):
    layer = build(name, 256, 384, seed=1)
    for spec in layer.factor_specs():
        w = getattr(layer, spec.name).detach()
        want = spectral_std(spec.fan_in, spec.fan_out)
        tol = 5 / math.sqrt(2 * w.numel())  # 5 relative standard errors of a sample std
        assert w.std().item() == pytest.approx(want, rel=tol), spec.name
        assert abs(w.mean().item()) < 5 * want / math.sqrt(w.numel()), spec.name
    for n, p in non_factors(layer).items():
        if n == "bias" or p.ndim >= 2 and p.numel() > 1:  # bias and gates (routers) start at zero
            assert not p.detach().any(), n
        else:  # scalars: gains and gammas start at one
            assert torch.equal(p.detach(), torch.ones_like(p)), n


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", NAMES)
def test_learning_rate_multipliers_are_structure_aware_mup(name, shape):
    """Factor f of a layer with n_f factors: lr multiplier d_in_base / (n_f fan_in_f) against a half-width base;
    gates get the dense multiplier d_in_base / d_in; bias and scalars 1 (naive mode: every factor the dense one)."""
    d_in, d_out = shape
    layer = build(name, d_in, d_out)
    with torch.device("meta"):
        base = build(name, d_in // 2, d_out // 2)
    specs = layer.factor_specs()
    for mode in ("structure_aware", "naive"):
        rules = param_rules(torch.nn.ModuleDict({"layer": layer}), torch.nn.ModuleDict({"layer": base}), mode)
        rules = {n.removeprefix("layer."): rule for n, rule in rules.items()}
        assert set(rules) == {n for n, _ in layer.named_parameters()}
        for spec in specs:
            want = 0.5 if mode == "naive" else (d_in // 2) / (len(specs) * spec.fan_in)
            assert rules[spec.name].lr_mult == pytest.approx(want), (mode, spec.name)
            assert rules[spec.name].init_std == pytest.approx(spectral_std(spec.fan_in, spec.fan_out))
        for n, p in non_factors(layer).items():
            gate = p.ndim >= 2 and p.numel() > 1
            assert rules[n].lr_mult == pytest.approx(0.5 if gate else 1.0), (mode, n)
            assert rules[n].weight_decay == gate, (mode, n)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", NAMES)
def test_outputs_and_gradients_match_its_dense_matrix(name, shape):
    """y = x W^T + b with W the layer's own materialised matrix, and the same gradients for the input and every
    parameter the matrix depends on (for a routed layer at init, whose zero router routes every token alike,
    all but the router)."""
    d_in, d_out = shape
    layer = build(name, d_in, d_out)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 5, d_in)
    g = torch.randn(3, 5, d_out)
    params = {n: p for n, p in layer.named_parameters() if n in {s.name for s in layer.factor_specs()}
              or p.numel() == 1 or n == "bias"}

    def grads(forward):
        xi = x.clone().requires_grad_(True)
        out = forward(xi)
        got = torch.autograd.grad((out * g).sum(), [xi, *params.values()])
        return out.detach(), dict(zip(["x", *params], got))

    out, got = grads(layer)
    want_out, want = grads(lambda xi: xi @ dense_matrix(layer).T + layer.bias)
    torch.testing.assert_close(out, want_out, rtol=1e-4, atol=1e-5)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-5, msg=lambda m: f"{n}: {m}")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", NAMES)
def test_fast_and_reference_paths_agree(name, shape):
    """The fused Functions (forced on at this size) and the plain-autograd path: same output and gradients, with
    a random router for routed layers."""
    d_in, d_out = shape
    layer = build(name, d_in, d_out)
    with torch.no_grad():
        for n, p in non_factors(layer).items():
            p.normal_()
    x = torch.randn(2, 9, d_in)

    def run(policy):
        layer.zero_grad()
        xi = x.clone().requires_grad_(True)
        with use_policy(policy):
            out = layer(xi)
        out.square().sum().backward()
        return out.detach(), xi.grad, {n: p.grad.clone() for n, p in layer.named_parameters()}

    fast, reference = run(PathPolicy(fused_min_elements=0)), run(PathPolicy(fused=False, native=False))
    torch.testing.assert_close(fast[0], reference[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast[1], reference[1], rtol=1e-4, atol=1e-5)
    for n in reference[2]:
        torch.testing.assert_close(fast[2][n], reference[2][n], rtol=1e-4, atol=1e-4, msg=lambda m: f"{n}: {m}")


def relative_errors(got, want) -> list[float]:
    """Normwise relative error of each of (output, input gradient, parameter gradients...) against want's."""
    pairs = [(got[0], want[0]), (got[1], want[1])] + [(got[2][n], want[2][n]) for n in want[2]]
    return [float((g.float() - w).norm() / max(float(w.norm()), 1e-30)) for g, w in pairs]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", NAMES)
def test_bf16_fast_paths_are_as_accurate_as_autocast(name, shape):
    """Under CPU bf16 autocast the fused Functions (forced on, GEMMs in fp32 on bf16-rounded operands, in bf16, or
    on the AMX kernel where the CPU has it) and plain ops under autocast: output and gradients each within 2x (+1%)
    of plain autocast's error against the fp32 plain-ops path, forward and backward; the output is bf16 before any
    bias."""
    d_in, d_out = shape
    layer = build(name, d_in, d_out, bias=False)
    with torch.no_grad():
        for n, p in non_factors(layer).items():
            p.normal_()
    x = torch.randn(2, 9, d_in)

    def run(policy, bf16):
        layer.zero_grad()
        xi = x.clone().requires_grad_(True)
        with use_policy(policy), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = layer(xi)
        out.float().square().sum().backward()
        return out.detach(), xi.grad, {n: p.grad.clone() for n, p in layer.named_parameters()}

    plain = PathPolicy(fused=False, native=False)
    want, autocast = run(plain, False), run(plain, True)
    for bf16_gemm, amx in ((False, False), (True, False), (True, True)):  # amx: the AMX kernel where it runs
        fast = run(PathPolicy(fused_min_elements=0, bf16_gemm=bf16_gemm, amx=amx), True)
        assert fast[0].dtype == torch.bfloat16 and all(g.dtype == torch.float32 for g in fast[2].values())
        for i, (err, bound) in enumerate(zip(relative_errors(fast, want), relative_errors(autocast, want))):
            assert err <= 2 * bound + 0.01, (f"bf16_gemm={bf16_gemm}, amx={amx}, term {i}: {err:.4f} vs autocast's "
                                             f"{bound:.4f}")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", NAMES)
def test_meta_device_build_has_the_same_shapes_and_costs(name, shape):
    d_in, d_out = shape
    real = build(name, d_in, d_out)
    with torch.device("meta"):
        meta = build(name, d_in, d_out)
    assert all(p.is_meta for p in meta.parameters())
    assert [(n, p.shape) for n, p in meta.named_parameters()] == [(n, p.shape) for n, p in real.named_parameters()]
    assert meta.factor_specs() == real.factor_specs()
    assert meta.flops_per_token() == real.flops_per_token() and meta.num_params() == real.num_params()


def guide_block(lang: str) -> str:
    """The first ```lang code block of docs/adding_a_structure.md."""
    return re.search(rf"```{lang}\n(.*?)```", GUIDE.read_text(), re.S).group(1)


@pytest.fixture
def guide_structure(tmp_path, monkeypatch):
    """The guide's example module and preset, put beside the package's modules and in place of the presets for the
    test; yields its registry name."""
    name = yaml.safe_load(guide_block("yaml"))["name"]
    presets = tmp_path / "structure"
    presets.mkdir()
    (presets / f"{name}.yaml").write_text(guide_block("yaml"))
    (tmp_path / f"{name}.py").write_text(guide_block("python"))
    monkeypatch.setattr(scaling.structures, "__path__", [*scaling.structures.__path__, str(tmp_path)])
    monkeypatch.setattr(structure_presets, "PRESETS", presets)
    monkeypatch.setitem(globals(), "PRESETS", presets)
    before = dict(REGISTRY)
    try:
        scaling.structures._discover()  # as at import: every module of the package
        yield name
    finally:
        REGISTRY.clear()
        REGISTRY.update(before)
        sys.modules.pop(f"scaling.structures.{name}", None)


def test_the_guides_example_is_found_and_keeps_the_contract(guide_structure):
    """docs/adding_a_structure.md's module and preset, with no other file edited, pass every per-structure check
    of this suite."""
    assert REGISTRY[guide_structure].__module__ == f"scaling.structures.{guide_structure}"
    checks = [f for n, f in globals().items() if n.startswith("test_") and "name" in inspect.signature(f).parameters]
    assert len(checks) >= 10
    for check in checks:
        for shape in SHAPES if "shape" in inspect.signature(check).parameters else [None]:
            check(guide_structure, *([shape] if shape else []))
