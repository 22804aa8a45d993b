import math

import pytest

from scaling.train.schedule import lr_factor, warmup_steps


def factors(schedule, total=100, **kw):
    args = dict(warmup=10, min_lr_frac=0.1, decay_frac=0.2) | kw
    return [lr_factor(s, total, schedule, **args) for s in range(total)]


def test_warmup_is_linear_and_reaches_one():
    f = factors("cosine")
    assert f[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert f[10] == pytest.approx(1.0)


def test_cosine_ends_at_min_and_is_monotone_after_warmup():
    f = factors("cosine")
    assert f[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    mid = 10 + (99 - 10) // 2
    assert f[mid] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (mid - 10) / 89)))


def test_constant_and_wsd():
    assert factors("constant")[10:] == [1.0] * 90
    w = factors("wsd")
    assert w[10:80] == [1.0] * 70
    assert w[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(w[80:], w[81:]))


def test_unknown_schedule_names_the_field():
    with pytest.raises(ValueError, match="train.schedule"):
        lr_factor(0, 10, "linear", 1, 0.1)


def test_warmup_is_fixed_in_training_units_whatever_the_run_length():
    """A curve read at a smaller budget had the warmup a run trained to that budget has (issue 22)."""
    assert warmup_steps(65_536, 2048) == 32
    assert warmup_steps(1000, 256) == 4  # a partial step still warms up
    assert warmup_steps(0, 256) == 0
    short, long = factors("constant", total=50), factors("constant", total=400)
    assert short[:10] == long[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])


def test_a_run_shorter_than_its_warmup_never_reaches_the_base_lr():
    f = factors("constant", total=5)
    assert f == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
