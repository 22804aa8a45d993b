"""Ladder variants (scaling.launch.sweeps): one budget per rung with its own axes, e.g. the widths around that budget's
compute-optimal size; a sweep whose variants all have ladders needs no budgets; every malformed rung is one error
naming the rung and the fix."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from scaling.launch.sweeps import SweepError, expand
from sweep_fixtures import TINY_BASE


def ladder_sweep(dense_ladder, **extra) -> dict:
    return {"name": "tiny_ladder", "base": TINY_BASE,
            "variants": {"dense": {"overrides": ["structure=dense"], "ladder": dense_ladder},
                         "btt": {"overrides": ["structure=btt"]}},
            "budgets": {"tokens": [4096]}} | extra


def test_each_rung_runs_its_own_widths_at_its_own_budget():
    rungs = [{"tokens": 4096, "axes": {"model.width": [32, 48]}}, {"flops": 2.0e9, "axes": {"model.width": [48, 64]}}]
    runs = expand(OmegaConf.create(ladder_sweep(rungs, axes={"train.seed": [0, 1]}))).runs
    dense = [r for r in runs if r.cfg.label == "dense"]
    got = sorted((int(r.cfg.model.width), r.axes[-1], int(r.cfg.train.seed)) for r in dense)
    assert got == sorted((w, budget, seed) for w, budget in [(32, "tokens=4096"), (48, "tokens=4096"),
                                                             (48, "flops=2e+09"), (64, "flops=2e+09")]
                         for seed in (0, 1))
    for r in dense:
        if r.cfg.train.flops is not None:  # tokens follow from the rung's FLOPs: within one optimiser step of C
            per_step = r.plan.units_per_step * r.plan.train_flops_per_unit
            assert 0 <= r.plan.train_flops - 2.0e9 < per_step
            assert r.cfg.train.eval_flops and max(r.cfg.train.eval_flops) < r.plan.train_flops  # reads lower rungs
    btt = [r for r in runs if r.cfg.label == "btt"]  # no ladder: the sweep's budgets, the base width
    assert sorted((int(r.cfg.model.width), r.axes[-1]) for r in btt) == [(32, "tokens=4096")] * 2


def test_budgets_may_be_left_out_only_when_every_variant_has_a_ladder():
    rung = [{"tokens": 4096, "axes": {"model.width": [32]}}]
    spec = ladder_sweep(rung)
    del spec["budgets"]
    with pytest.raises(SweepError, match=r"sweep.budgets must set exactly one of .* left out only when every "
                                         r"variant has a ladder"):
        expand(OmegaConf.create(spec))
    spec["variants"]["btt"]["ladder"] = rung
    assert sorted(r.cfg.label for r in expand(OmegaConf.create(spec)).runs) == ["btt", "dense"]


@pytest.mark.parametrize("ladder, message", [
    ({"tokens": 4096}, "ladder must be a non-empty list of rungs such as {flops: 1.0e15"),
    ([], "ladder must be a non-empty list of rungs"),
    (["tokens=4096"], "ladder[0] is 'tokens=4096'; a rung is a mapping {flops: C"),
    ([{"tokens": 4096}, {"tokens": 4096, "flops": 1e9}], "ladder[1] has keys ['flops', 'tokens']; a rung sets "
                                                           "exactly one of ('tokens', 'flops', 'tokens_per_param')"),
    ([{"tokens": 4096, "widths": [32]}], "ladder[0] has keys ['tokens', 'widths']; a rung sets exactly one of"),
    ([{"flops": -1.0}], "ladder[0].flops=-1.0 must be one positive number, e.g. 1.0e15"),
    ([{"tokens": [4096]}], "ladder[0].tokens=[4096] must be one positive number"),
    ([{"tokens": 4096, "axes": [32]}], "ladder[0].axes must map override keys to lists of values"),
    ([{"tokens": 4096, "axes": {"train.seed": [2]}}], "ladder[0].axes sets ['train.seed'], which the sweep's or the "
                                                       "variant's axes set too; set each key in one place"),
])
def test_a_bad_rung_is_one_error_naming_it_and_the_fix(ladder, message):
    with pytest.raises(SweepError) as err:
        expand(OmegaConf.create(ladder_sweep(ladder, axes={"train.seed": [0]})))
    assert "variant 'dense' ladder" in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_an_override_of_a_ladder_key_would_collapse_it():
    rungs = [{"tokens": 4096, "axes": {"model.width": [32, 48]}}]
    with pytest.raises(SweepError, match="model.width is swept by the ladder of variant 'dense'"):
        expand(OmegaConf.create(ladder_sweep(rungs)), ["model.width=64"])
