"""ntk-evolution: the similarity's invariants, a run's history and report, and an initial kernel that survives resume."""

from __future__ import annotations

import deepscope_standard
import pytest
import torch

import deepscope_ntk
from deepscope.testing import interrupt_then_resume, make_host, run_toml
from deepscope_ntk.evolution import distance, similarity, spectral_mass


def psd(seed, n=8):
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T


def test_similarity_and_distance_invariants():
    a, b = psd(0), psd(1)
    assert similarity(a, a) == pytest.approx(1.0, abs=1e-14)
    assert similarity(a, 3.5 * a) == pytest.approx(1.0, abs=1e-14)
    assert distance(a, a) >= 0 and distance(a, 3.5 * a) >= 0  # never below 0 by rounding
    assert distance(a, b) == pytest.approx(distance(b, a), abs=1e-15)
    assert 0 < distance(a, b) <= 1
    assert spectral_mass(a, 8) == pytest.approx(1.0)
    diag = torch.diag(torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64))
    assert spectral_mass(diag, 1) == pytest.approx(0.9)  # 9 / (9 + 1)


PIPELINE = """
[run]
name = "evolution"
seed = 0
checkpoint_every = 1
[data]
use = "fashion-mnist-sample"
subset = 500
[model]
use = "mlp"
[[stage]]
do = "probe"
use = "ntk-evolution"
n = 10
mode = "trace"
attack = { use = "fgsm", eps = 0.0313725 }
[[stage]]
do = "train"
use = "standard"
epochs = 3
lr = 0.05
probes = [{ use = "ntk-evolution", n = 10, mode = "trace", every = 1, attack = { use = "fgsm", eps = 0.0313725 } }]
[[stage]]
do = "probe"
use = "ntk-evolution-report"
"""


@pytest.fixture(scope="module")
def host():
    return make_host(deepscope_standard, deepscope_ntk)


@pytest.fixture(scope="module")
def straight(host):
    return run_toml(PIPELINE, host, track=False)


def test_the_history_starts_at_the_initial_kernel_and_the_report_reads_it(straight):
    m = straight.metrics
    saved = straight.state.extras["ntk/evolution/probe/ntk-evolution"]
    assert saved["epochs"] == [0, 1, 2, 3]
    assert len(saved["history"]) == len(saved["adv_history"]) == 4
    first = saved["history"][0].double()  # kept in float32
    assert (saved["initial"] - first).abs().max() < 1e-6 * saved["initial"].abs().max()
    p = "probe/ntk-evolution/"
    assert 0 < m[p + "dist_init"] < 1 and m[p + "sim_init"] < 1 and m[p + "radius"] > 0
    assert m[p + "adv_radius"] > 0 and 0 < m[p + "mass_top10"] <= 1
    r = "probe/ntk-evolution-report/"
    assert m[r + "kernels"] == 4
    assert m[r + "final_dist_init"] == pytest.approx(m[p + "dist_init"], abs=1e-6)  # float32 history


def test_the_initial_kernel_survives_a_resume(host, straight, tmp_mlflow):
    _, resumed = interrupt_then_resume(PIPELINE, (deepscope_standard, deepscope_ntk), tmp_mlflow,
                                       key="train/standard/loss", step=2)
    assert resumed.status == "FINISHED"
    for key in ("sim_init", "radius", "dist_prev", "adv_sim_init"):
        assert resumed.metrics[f"probe/ntk-evolution/{key}"] == straight.metrics[f"probe/ntk-evolution/{key}"]
    assert resumed.metrics["probe/ntk-evolution-report/kernels"] == 4
    saved = resumed.state.extras["ntk/evolution/probe/ntk-evolution"]
    assert torch.equal(saved["initial"], straight.state.extras["ntk/evolution/probe/ntk-evolution"]["initial"])
