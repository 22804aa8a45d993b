"""Run-id audit: every setting that can change a result is part of the run id; the few that cannot are listed in
scaling.store.results.NON_IDENTITY_KEYS with the reason."""

from __future__ import annotations

import copy
import dataclasses
import functools

import pytest
from omegaconf import OmegaConf

from scaling.config.schema import DataConfig, ModelConfig, StructureConfig, TrainConfig
from scaling.config.compose import compose_run_config
from scaling.store.results import IDENTITY_SECTIONS, NON_IDENTITY_KEYS, run_id

SCHEMAS = {"model": ModelConfig, "structure": StructureConfig, "data": DataConfig, "train": TrainConfig}
FIELDS = [(section, f.name) for section, schema in SCHEMAS.items() for f in dataclasses.fields(schema)]


@functools.cache
def _composed() -> dict:
    return OmegaConf.to_container(compose_run_config(["structure=btt", "model.width=64"]), resolve=True)


def base() -> dict:
    """The resolved config of a btt run, a fresh copy each call (composed once: Hydra takes ~0.2 s a config)."""
    return copy.deepcopy(_composed())


def test_the_identity_sections_are_the_schema_sections():
    assert set(IDENTITY_SECTIONS) == set(SCHEMAS)


@pytest.mark.parametrize("section, name", FIELDS, ids=[f"{s}.{n}" for s, n in FIELDS])
def test_each_setting_changes_the_id_unless_listed_as_not_affecting_results(section, name):
    cfg = base()
    assert name in cfg[section]  # every schema field reaches the resolved config
    changed = base()
    changed[section][name] = "__another value__"
    if name in NON_IDENTITY_KEYS.get(section, ()):
        assert run_id(changed) == run_id(cfg)
    else:
        assert run_id(changed) != run_id(cfg)


def test_eval_batches_is_part_of_the_id():
    """It changes val_loss, so two runs differing only in it must not share a directory (issue 13, item 5)."""
    a = compose_run_config(["train.eval_batches=8"])
    b = compose_run_config(["train.eval_batches=4"])
    assert run_id(a) != run_id(b)


def test_names_and_places_are_not_part_of_the_id():
    cfg = base()
    other = base() | {"label": "x", "sweep": "y", "results_root": "/elsewhere",
                      "logger": {**cfg["logger"], "mode": "disabled", "project": "p", "tags": ["t"]}}
    assert run_id(other) == run_id(cfg)
