"""ntk-transfer: against an identical kernel model it is the white-box attack; it transfers to a trained MLP."""

from __future__ import annotations

import deepscope_standard
import pytest

import deepscope_ntk
from deepscope import ConfigError
from deepscope.testing import make_host, run_toml

HEAD = """
[run]
name = "transfer"
seed = 0
[data]
use = "fashion-mnist-sample"
classes = [0, 6]
"""

PGD = 'eps = 0.0313725\nsteps = 5\nstep_size = 0.01\nrandom_start = false\nn_examples = 100\n'


@pytest.fixture(scope="module")
def host():
    return make_host(deepscope_standard, deepscope_ntk)


def test_against_the_same_kernel_model_transfer_equals_white_box(host):
    """The run's model is the surrogate itself (same kernel, same support): the transferred examples are the
    white-box PGD examples, so every accuracy agrees exactly."""
    text = HEAD + f"""
[model]
use = "kernel-regression"
targets = "pm1"
[[stage]]
do = "train"
use = "kernel-fit"
n = 200
[[stage]]
do = "attack"
use = "pgd"
{PGD}
[[stage]]
do = "attack"
use = "ntk-transfer"
n = 200
n_examples = 100
surrogate = {{ use = "kernel-regression", targets = "pm1" }}
attack = {{ use = "pgd", {", ".join(line for line in PGD.strip().splitlines() if "n_examples" not in line)} }}
"""
    m = run_toml(text, host, track=False).metrics
    assert m["attack/ntk-transfer/surrogate_support"] == 200
    assert m["attack/ntk-transfer/robust_acc"] == m["attack/pgd/robust_acc"] < m["attack/pgd/clean_acc"] - 0.2
    # the stage averages in float32, the surrogate counts exactly: equal up to float32 rounding of k / 100
    assert m["attack/ntk-transfer/surrogate_robust_acc"] == pytest.approx(m["attack/pgd/robust_acc"], abs=1e-7)
    assert m["attack/ntk-transfer/surrogate_clean_acc"] == pytest.approx(m["attack/pgd/clean_acc"], abs=1e-7)


def test_kernel_examples_transfer_to_a_trained_network(host):
    text = HEAD + """
[model]
use = "mlp"
[[stage]]
do = "train"
use = "standard"
epochs = 3
lr = 0.05
[[stage]]
do = "attack"
use = "ntk-transfer"
n = 400
n_examples = 200
attack = { use = "pgd", eps = 0.1, steps = 10, step_size = 0.02, random_start = false }
[[stage]]
do = "attack"
use = "ntk-transfer"
name = "no-budget"
n = 400
n_examples = 200
attack = { use = "pgd", eps = 0.0, steps = 1, step_size = 0.01, random_start = false }
"""
    m = run_toml(text, host, track=False).metrics
    assert m["attack/ntk-transfer/clean_acc"] > 0.75
    assert m["attack/ntk-transfer/robust_acc"] < m["attack/ntk-transfer/clean_acc"] - 0.15  # it transfers
    assert m["attack/ntk-transfer/surrogate_robust_acc"] < 0.2  # and breaks the kernel model itself
    assert m["attack/no-budget/robust_acc"] == m["attack/no-budget/clean_acc"]  # eps 0 changes nothing
    assert m["attack/ntk-transfer/max_linf"] <= 0.1 + 1e-6


def test_a_surrogate_that_is_not_a_kernel_model_is_a_config_error(host):
    text = HEAD + """
[model]
use = "mlp"
[[stage]]
do = "attack"
use = "ntk-transfer"
surrogate = { use = "mlp" }
"""
    with pytest.raises(ConfigError, match="kernel-regression") as err:
        run_toml(text, host, track=False)
    assert "surrogate" in str(err.value)
