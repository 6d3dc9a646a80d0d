"""attack-gap compares ntk-transfer by its nested attack's threat model (it has no eps of its own)."""

from __future__ import annotations

import deepscope_ntk
import deepscope_standard
import pytest

import deepscope_robust_data
from deepscope import ConfigError, parse_pipeline
from deepscope.testing import make_host

TEXT = """
[run]
name = "gap"
seed = 0
[data]
use = "fashion-mnist-sample"
[model]
use = "mlp"
[[stage]]
do = "attack"
use = "pgd"
eps = 0.1
n_examples = 50
[[stage]]
do = "attack"
use = "ntk-transfer"
attack = {{ use = "pgd", eps = {eps} }}
n_examples = 50
[[stage]]
do = "probe"
use = "attack-gap"
"""


@pytest.fixture(scope="module")
def registry():
    return make_host(deepscope_standard, deepscope_ntk, deepscope_robust_data).registry


def test_the_same_nested_eps_is_a_fair_comparison(registry):
    pipeline = parse_pipeline(TEXT.format(eps=0.1), registry)
    assert [s.use for s in pipeline.stages] == ["pgd", "ntk-transfer", "attack-gap"]


def test_a_different_nested_eps_is_rejected_at_the_probes_key(registry):
    with pytest.raises(ConfigError, match=r"\$\.stage\[2\]\.alternatives: .*ntk-transfer.*eps = 0\.2"):
        parse_pipeline(TEXT.format(eps=0.2), registry)
