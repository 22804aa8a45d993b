"""Each rule the harness states has one home; these tests import it from there and check its users agree."""

from __future__ import annotations

import pytest

from analysis.fit import taxonomy as analysis_taxonomy
from scaling.mup import parametrization
from scaling.train import plan
from scaling.config.schema import ModelConfig, StructureConfig
from scaling.config.compose import compose_run_config
from scaling.data.interface import DataInfo
from scaling.models.flops import training_flops
from scaling.models import FAMILIES, ModelConfigError, build_model, check_data_kind
from scaling.models.base import EMBED_STD
from scaling.structures import build_linear
from scaling.structures.taxonomy import coordinates
from scaling.train.steps import taxonomy as run_taxonomy


def test_training_flops_are_three_forwards_in_the_plan():
    assert training_flops(10) == 30
    run = plan.plan_run(compose_run_config(["model=gpt2", "structure=btt", "model.width=64", "train.tokens=1e5"]))
    assert run.train_flops_per_unit == training_flops(run.forward_flops_per_unit)
    assert run.train_flops == training_flops(run.forward_flops_per_unit) * run.units


def test_families_and_their_data_kinds_come_from_the_models():
    assert plan.FAMILIES is FAMILIES  # imported, not restated
    assert {name: cls.data_kinds for name, cls in FAMILIES.items()} == {
        "gpt2": ("text",), "vit": ("image",), "mlp": ("image", "teacher")}
    check_data_kind("mlp", "teacher")
    with pytest.raises(ModelConfigError,
                       match=r"model=vit needs image data but data.kind='text'; use data=fashion_mnist"):
        check_data_kind("vit", "text")
    with pytest.raises(plan.ConfigError,
                       match=r"model=gpt2 needs text data but data.kind='image'; use data=shakespeare"):
        plan.plan_run(compose_run_config(["model=gpt2", "data=fashion_mnist"]))


def test_embedding_std_is_the_models_one():
    assert parametrization.EMBED_STD is EMBED_STD == 0.02
    assert parametrization.EMBED_RULE.init_std == EMBED_STD


@pytest.mark.parametrize("theta,expected", [
    ([0.5, 0, 0.5, 0, 0.5, 0.5, 0], (0.0, 1.0, 0.5)),  # BTT rank 1
    ([0.5, 0.5, 0, 0.5, 0.5, 0, 0], (0.5, 1.0, 0.5)),  # Kronecker
])
def test_taxonomy_formulas_have_one_home(theta, expected):
    c = coordinates(*theta)
    assert (c.omega, c.psi, c.nu) == pytest.approx(expected)
    assert analysis_taxonomy.coordinates(theta) == c
    layer = build_linear(StructureConfig("einsum", theta=theta), 64, 64)
    assert (layer.omega, layer.psi, layer.nu) == (c.omega, c.psi, c.nu)
    assert layer.coordinates == c


@pytest.mark.parametrize("structure", ["einsum", "einsum_norm"])
def test_run_taxonomy_comes_from_the_structure(structure):
    """The summary's omega, psi, nu are the layer's own (Structure.taxonomy), for einsum and einsum_norm alike;
    structures outside the taxonomy add none."""
    theta = [0.5, 0.5, 0, 0.5, 0.5, 0, 0]
    c = coordinates(*theta)
    model = build_model(ModelConfig(family="gpt2", width=64, head_dim=16, depth=1, context=8),
                        StructureConfig(structure, theta=theta), DataInfo(kind="text", unit="token", vocab_size=32))
    assert run_taxonomy(model) == {"omega": c.omega, "psi": c.psi, "nu": c.nu}
    btt = build_model(ModelConfig(family="gpt2", width=64, head_dim=16, depth=1, context=8),
                        StructureConfig("btt"), DataInfo(kind="text", unit="token", vocab_size=32))
    assert run_taxonomy(btt) == {}
