"""How structures are found and how their settings are checked: REGISTRY is every structure of a module in
scaling/structures (no hand-written list; a new module is found as test_contract.py shows with the guide's example),
and check_settings refuses a value outside the structure's declared range and a setting the structure does not
take, each in one line that names the field and the fix."""

from __future__ import annotations

import pytest

import scaling.structures
from scaling.config.schema import StructureConfig
from scaling.structures import REGISTRY, StructureError, check_settings

S = StructureConfig


def test_registry_has_every_shipped_structure_in_name_order():
    assert list(REGISTRY) == ["btt", "btt_moe", "btt_moe_norm", "btt_norm", "dense", "einsum", "einsum_norm", "kron",
                              "low_rank", "monarch", "tt"]
    assert {name: cls.__module__.rpartition(".")[2] for name, cls in REGISTRY.items()} == {
        "btt": "btt", "btt_norm": "btt", "btt_moe": "btt_moe", "btt_moe_norm": "btt_moe", "dense": "dense",
        "einsum": "einsum", "einsum_norm": "einsum", "kron": "kron", "low_rank": "low_rank", "monarch": "monarch",
        "tt": "tt"}


def test_a_second_structure_under_a_taken_name_is_refused():
    with pytest.raises(ValueError, match=r"structure name 'dense' is taken by Dense; register Other under another"):
        scaling.structures.register("dense")(type("Other", (scaling.structures.StructuredLinear,), {}))
    assert REGISTRY["dense"].__name__ == "Dense"


@pytest.mark.parametrize("cfg", [S("dense"), S("dense", cores=2, experts=8, top_k=2, layout="paper"),
                                 S("btt", rank=4, layout="balanced"), S("einsum_norm", theta=[1, 0, 0, 0, 1, 0, 0.5]),
                                 S("low_rank", rank_frac=0.25), S("dense", aux_weight=0.1, layers="ffn")])
def test_declared_settings_and_untouched_defaults_pass(cfg):
    check_settings(cfg)


@pytest.mark.parametrize("cfg,message", [
    (S("dense", rank=4), "structure.rank=4 is not a setting of dense; dense takes no settings"),
    (S("btt", cores=3), "structure.cores=3 is not a setting of btt; btt takes rank, layout"),
    (S("btt_moe", rank=2), "structure.rank=2 is not a setting of btt_moe; btt_moe takes experts, top_k, layout"),
    (S("monarch", layout="balanced"), "structure.layout=balanced is not a setting of monarch; monarch takes blocks"),
    (S("btt", rank=0), "structure.rank=0 is out of range: it must be null or an integer >= 1"),
    (S("tt", cores=1), "structure.cores=1 is out of range: it must be an integer >= 2 "
                       "(the default is structure.cores=2)"),
    (S("low_rank", rank_frac=1.0), "structure.rank_frac=1.0 is out of range: it must be null or a number in (0, 1)"),
    (S("einsum"), "structure.theta=None is out of range: it must be a list of 7 numbers in [0, 1]"),
    # a value that no structure takes is reported with its range, even where the structure does not take the field
    (S("dense", layout="bogus"), "structure.layout=bogus is out of range: it must be one of paper, balanced "
                                 "(the default is structure.layout=paper)"),
    (S("bogus"), "structure.name='bogus' is not a known structure; choose one of ['btt', "),
])
def test_bad_settings_are_refused_in_one_line_naming_the_field(cfg, message):
    with pytest.raises(StructureError) as err:
        check_settings(cfg)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
