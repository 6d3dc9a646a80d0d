"""STM's stage rule on scripted validation-loss sequences, against the official branch order:
a strictly decreasing sequence first advances at n = 30 (r = -1 < -5 / sqrt(28) only from n = 30 on),
a rising one at n = 30 too (r > 3 / sqrt(n - 2) from n = 20, but n = 20 is caught by the official
"pending" branch first), a constant one never (r is NaN); the cap never exceeds the maximum; the
fine-tuning decay stops the run after 14 decays from lr_img 1000 and 24 from 1e4."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepscope_galaxy.stages import StageRule, pearson_with_index


def _rule(**kw):
    return StageRule(**{"init_epoch": 1, "max_start_epoch": 29, "sigma": 5, **kw})


def _first_advance(sequence, **kw):
    rule, lr = _rule(**kw), 1000.0
    for it, value in enumerate(sequence):
        if rule.collecting:
            rule.record(value)
        out = rule.check(it, lr)
        lr = out["lr_img"]
        if out["advanced"]:
            return len(rule.test_loss) or it + 1, out
    return None, None


def test_pearson_matches_numpy_and_is_nan_for_constants():
    values = [3.0, 1.0, 2.0, 0.5]
    assert pearson_with_index(values) == pytest.approx(np.corrcoef(values, range(4))[0, 1], rel=1e-15)
    assert math.isnan(pearson_with_index([1.0] * 10))


@pytest.mark.parametrize("sequence,expected", [
    ([10.0 - 0.01 * i for i in range(200)], 30),
    ([1.0 + 0.01 * i for i in range(200)], 30),
    ([1.0] * 1000, None),
])
def test_scripted_sequences_advance_when_the_official_rule_says(sequence, expected):
    n, out = _first_advance(sequence)
    assert n == expected
    if expected is not None:
        assert out["reset"] and out["checked"]


def test_a_rising_sequence_passes_the_3_sigma_test_at_20_but_the_pending_branch_holds_it():
    rule = _rule()
    for it in range(20):
        rule.record(1.0 + it)
        out = rule.check(it, 1000.0)
    assert out["checked"] and out["r"] > 3 / math.sqrt(18) and not out["advanced"] and not rule.progress["passed"]
    assert len(rule.test_loss) == 20


def test_a_decreasing_stage_passes_at_30_and_the_stage_restarts():
    rule = _rule()
    for it in range(30):
        rule.record(-float(it))
        out = rule.check(it, 1000.0)
        if it < 29:
            assert not out["advanced"]
    assert out["advanced"] and rule.cap == 2 and rule.test_loss == [] and not rule.progress["passed"]
    assert out["threshold"] == pytest.approx(-5 / math.sqrt(28))


def test_the_cap_never_exceeds_the_maximum():
    rule = _rule(init_epoch=1, max_start_epoch=3)
    caps = []
    for it in range(400):
        rule.record(-float(len(rule.test_loss)))
        rule.check(it, 1000.0)
        caps.append(rule.cap)
    assert max(caps) == 3 and caps.count(3) > 100  # it reached the maximum early and stayed there


@pytest.mark.parametrize("lr_img,decays", [(1000.0, 14), (1e4, 24)])
def test_fine_tuning_decays_every_50_iterations_and_stops_below_the_floor(lr_img, decays):
    rule = _rule(max_duration=1000)
    lr, seen, it = lr_img, [], 0
    while not rule.progress["stopped"]:
        if rule.collecting:
            rule.record(1.0)  # constant: never passes, so the stage outlasts max_duration
        out = rule.check(it, lr)
        if out["lr_img"] != lr:
            seen.append(it)
        lr = out["lr_img"]
        it += 1
        assert it < 5000
    assert len(seen) == decays and lr < 50 <= lr / 0.8
    assert rule.progress["fine_tuning"] and len(rule.test_loss) == 1010  # no loss recorded while fine-tuning
    assert all(i % 50 == 0 for i in seen) and seen[0] == 1050 and np.all(np.diff(seen) == 50)
