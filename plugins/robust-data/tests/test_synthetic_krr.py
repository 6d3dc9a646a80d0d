"""synthetic-krr against the independent path: kernel-fit on the same set, then the stock attack stage."""

from __future__ import annotations

import deepscope_ntk
import deepscope_standard
import pytest

import deepscope_robust_data
from deepscope import ConfigError, hookimpl, parse_pipeline
from deepscope.testing import make_host, run_toml

PIPELINE = """
[run]
name = "synthetic-krr"
seed = 0
[data]
use = "fashion-mnist-sample"
classes = [0, 6]
[model]
use = "kernel-regression"
reg = 1e-6
targets = "centered"
[[stage]]
do = "distill"
use = "adversarial-kip"
name = "set"
ipc = 3
steps = 4
eps = 0.1
target_batch = 60
test_n = 100
probes = [{ use = "synthetic-krr", every_steps = 2, n_test = 50, attacks = [{ use = "fgsm", eps = 0.1 }] }]
[[stage]]
do = "probe"
use = "synthetic-krr"
set = "synthetic/set"
n_test = 120
batch_size = 50
attacks = [{ use = "pgd", eps = 0.1, steps = 5, random_start = false }, "fgsm",
           { use = "fgsm", eps = 0.05 }]
[[stage]]
do = "probe"
use = "synthetic-krr"
name = "clean"
n_test = 120
attacks = [{ use = "pgd", eps = 0.0, steps = 1, random_start = false }]
[[stage]]
do = "train"
use = "kernel-fit"
data = "synthetic/set"
test_n = 120
[[stage]]
do = "attack"
use = "pgd"
eps = 0.1
steps = 5
random_start = false
n_examples = 120
[[stage]]
do = "attack"
use = "fgsm"
n_examples = 120
[[stage]]
do = "attack"
use = "fgsm"
name = "fgsm-small"
eps = 0.05
n_examples = 120
"""


@pytest.fixture(scope="module")
def run():
    seen = []

    class Record:
        @hookimpl
        def deepscope_metrics_logged(self, run, metrics, step):
            seen.extend((k, step) for k in metrics if k.endswith("synthetic-krr/robust_acc") and k.startswith("distill"))

    result = run_toml(PIPELINE, make_host(deepscope_standard, deepscope_ntk, deepscope_robust_data, Record()),
                      track=False)
    return result, seen


def test_the_probe_scores_the_set_as_kernel_fit_and_the_attack_stage_do(run):
    m = run[0].metrics
    assert m["probe/synthetic-krr/support"] == 6
    assert m["probe/synthetic-krr/acc"] == pytest.approx(m["train/kernel-fit/test_acc"], abs=1e-12)
    # the same examples fooled (the attack stage averages in float32: compare counts of 120)
    for name, stage in (("pgd", "pgd"), ("fgsm", "fgsm"), ("fgsm_1", "fgsm-small")):
        assert round(120 * m[f"probe/synthetic-krr/robust_acc_{name}"]) == round(120 * m[f"attack/{stage}/robust_acc"])
    assert m["probe/synthetic-krr/robust_acc_pgd"] < m["probe/synthetic-krr/acc"]  # the attack bites
    # the per-example worst case is at most the weakest single attack's number
    per_attack = [m[f"probe/synthetic-krr/robust_acc_{name}"] for name in ("pgd", "fgsm", "fgsm_1")]
    assert m["probe/synthetic-krr/robust_acc"] <= min(per_attack)
    assert m["probe/clean/robust_acc"] == m["probe/clean/acc"] == m["probe/synthetic-krr/acc"]  # eps 0: no change
    assert m["probe/clean/robust_acc_pgd"] == m["probe/clean/acc"]


def test_as_a_periodic_probe_it_follows_the_distillers_iterate(run):
    steps = sorted(step for _, step in run[1])
    assert steps == [2, 4]


def test_an_unknown_set_is_a_validate_error_naming_the_key():
    host = make_host(deepscope_standard, deepscope_ntk, deepscope_robust_data)
    text = PIPELINE.replace('set = "synthetic/set"', 'set = "synthetic/nope"')
    with pytest.raises(ConfigError, match=r"\$\.stage\[1\]\.set: set = 'synthetic/nope' names no distilled set.*"
                                          r"'synthetic/set'"):
        parse_pipeline(text, host.registry)
    # and with no distill stage before it, "synthetic" itself names nothing
    alone = PIPELINE[:PIPELINE.index("[[stage]]")] + '[[stage]]\ndo = "probe"\nuse = "synthetic-krr"\n'
    with pytest.raises(ConfigError, match=r"\$\.stage\[0\]\.set: .*none \(no distill stage before this probe\)"):
        parse_pipeline(alone, host.registry)
