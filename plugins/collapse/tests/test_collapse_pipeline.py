"""The probes and the trainer inside real pipelines (core + standard plugin + this plugin)."""

from __future__ import annotations

import math
from pathlib import Path

import attrs
import pytest
import torch
from torch import nn

import deepscope_collapse
import deepscope_standard
from deepscope import AttackConfig, ConfigError, hookimpl, param, parse_pipeline
from deepscope.testing import make_host, run_toml, tiny_data


@attrs.define
class TinyConfig:
    n_train: int = param(60, doc="training examples")


@attrs.define(kw_only=True)
class IdentityConfig(AttackConfig):
    eps: float = param(0.1, doc="declared radius (the attack returns x itself)")


class IdentityAttack:
    def __init__(self, config):
        self.config = config

    def perturb(self, model, x, y, target=None):
        return x.clone()


class FlipAttack(IdentityAttack):
    """Deterministic "attack" 1 - x: reproducible outside the probe, and it fools often."""

    def perturb(self, model, x, y, target=None):
        return 1.0 - x


class CollapseTestPlugin:
    @hookimpl
    def deepscope_register_datasets(self, register):
        register("collapse-tiny", lambda cfg: tiny_data(n_train=cfg.n_train, n_test=30, shape=(1, 4, 4), classes=3),
                 TinyConfig)

    @hookimpl
    def deepscope_register_models(self, register):
        register("collapse-mlp", lambda cfg, info: nn.Sequential(
            nn.Flatten(), nn.Linear(info.num_inputs, 10), nn.ReLU(), nn.Linear(10, 6), nn.ReLU(),
            nn.Linear(6, info.num_classes)), None)

    @hookimpl
    def deepscope_register_attacks(self, register):
        register("identity", IdentityAttack, IdentityConfig)
        register("flip", FlipAttack, IdentityConfig)


@pytest.fixture
def host():
    return make_host(deepscope_standard, deepscope_collapse, CollapseTestPlugin())


HEAD = """
[run]
name = "collapse-test"
seed = 3
device = "cpu"
[data]
use = "collapse-tiny"
[model]
use = "collapse-mlp"
"""

NC = ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3", "nc4", "cdnv", "etf_error", "etf_error_w")


def test_periodic_probe_logs_every_epoch_on_clean_attacked_and_noisy_data(host, tmp_mlflow):
    result = run_toml(HEAD + """
[[stage]]
do = "train"
use = "standard"
epochs = 2
lr = 0.1
probes = [{ use = "neural-collapse", every = 1, attack = { use = "pgd", eps = 0.1, steps = 3 },
            noise = "sign", layers = "all" }]
""", host, tracking_uri=tmp_mlflow)
    assert result.status == "FINISHED"
    m = result.metrics
    for group in ("clean", "perturbed", "noise"):
        for key in NC:
            assert math.isfinite(m[f"probe/neural-collapse/{group}/{key}"]), (group, key)
        assert math.isfinite(m[f"probe/neural-collapse/{group}/layer/00_2/nc1"])
    assert m["probe/neural-collapse/perturbed/align/dist"] > 0
    history = result.state.extras["deepscope_collapse/history"]["probe/neural-collapse"]
    assert [h["epoch"] for h in history] == [1, 2]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tmp_mlflow)
    steps = [p.step for p in client.get_metric_history(result.run_id, "probe/neural-collapse/perturbed/nc1")]
    assert steps == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "probe/neural-collapse")}
    assert "probe/neural-collapse/nc_trajectory.png" in artifacts
    assert "probe/neural-collapse/nc_layers_epoch0002.png" in artifacts
    assert "probe/neural-collapse/layer_reliability_epoch0002.csv" in artifacts
    import json

    local = client.download_artifacts(result.run_id, "probe/neural-collapse/layer_reliability_epoch0002.json")
    rows = json.loads(Path(local).read_text())
    perturbed = [row for row in rows if row["set"] == "perturbed"]
    assert [row["depth"] for row in perturbed] == list(range(len(perturbed))) and len(perturbed) >= 3
    assert perturbed[-1]["layer"] == "penultimate"
    assert perturbed[-1]["ncc_clean_acc"] == m["probe/neural-collapse/perturbed/ncc_clean_acc"]
    assert perturbed[0]["nc1"] == m["probe/neural-collapse/perturbed/layer/00_2/nc1"]


def run_probe_stage(host, params: str):
    return run_toml(HEAD + f"""
[[stage]]
do = "train"
use = "standard"
epochs = 2
lr = 0.1
[[stage]]
do = "probe"
use = "neural-collapse"
{params}
""", host, track=False)


def test_identity_attack_reproduces_clean_metrics_and_targeted_labels_permute_means(host):
    r = run_probe_stage(host, 'attack = { use = "identity" }\nnoise = "gaussian"\nnoise_eps = 1e-12\nlayers = "all"')
    m = r.metrics
    p = "probe/neural-collapse"
    for key in NC + ("layer/00_2/nc1",):
        assert m[f"{p}/perturbed/{key}"] == pytest.approx(m[f"{p}/clean/{key}"], rel=1e-9)
        assert m[f"{p}/noise/{key}"] == pytest.approx(m[f"{p}/clean/{key}"], rel=1e-6)
    assert m[f"{p}/perturbed/align/dist"] == 0.0 and m[f"{p}/perturbed/align/global_shift"] == 0.0

    t = run_probe_stage(host, 'attack = { use = "identity" }\ntargeted = true').metrics
    # same inputs, labels y + 1: a permutation of the classes, so NC1 and NC2 are unchanged
    assert t[f"{p}/perturbed/nc1"] == pytest.approx(t[f"{p}/clean/nc1"], rel=1e-9)
    assert t[f"{p}/perturbed/nc2_equiangular"] == pytest.approx(t[f"{p}/clean/nc2_equiangular"], rel=1e-9)
    # the identity "attack" changes no prediction: accuracy is the clean one, the target is never hit
    # unless the network already predicts y + 1
    assert t[f"{p}/perturbed/net_acc"] == pytest.approx(t[f"{p}/clean/net_acc"])
    assert t[f"{p}/perturbed/target_success"] <= 1 - t[f"{p}/clean/net_acc"] + 1e-12
    # and the "class c" mean of the perturbed set is the clean mean of class c - 1
    state = r.state
    x, y = state.data.tensors("train")
    with torch.no_grad():
        h = state.model.eval().features(x).double()
    mu = torch.stack([h[y == c].mean(0) for c in range(3)])
    expected = torch.stack([(mu[c] - mu[(c - 1) % 3]).norm() for c in range(3)]).mean()
    assert t[f"{p}/perturbed/align/dist"] == pytest.approx(float(expected), rel=1e-5)


def test_ncc_accuracy_matches_brute_force_nearest_centre(host):
    r = run_toml(HEAD + """
[[stage]]
do = "train"
use = "standard"
epochs = 2
lr = 0.1
[[stage]]
do = "probe"
use = "ncc-accuracy"
attack = { use = "identity" }
""", host, track=False)
    state = r.state
    xc, yc = state.data.tensors("train")
    x, y = state.data.tensors("test")
    with torch.no_grad():
        model = state.model.eval()
        hc, h = model.features(xc).double(), model.features(x).double()
        net_pred = model(x).argmax(1)
    centres = torch.stack([hc[yc == c].mean(0) for c in range(3)])
    pred = torch.cdist(h, centres).argmin(1)
    p = "probe/ncc-accuracy"
    assert r.metrics[f"{p}/clean/ncc_acc"] == pytest.approx(float((pred == y).double().mean()), abs=1e-12)
    assert r.metrics[f"{p}/perturbed/ncc_acc"] == r.metrics[f"{p}/clean/ncc_acc"]
    assert r.metrics[f"{p}/clean/net_acc"] == pytest.approx(float((net_pred == y).double().mean()), abs=1e-12)
    assert r.metrics[f"{p}/clean/ncc_net_agreement"] == pytest.approx(float((pred == net_pred).double().mean()))


@pytest.mark.parametrize("params,key", [
    ('noise = "gaussian"', "noise_eps"),
    ("targeted = true", "attack"),
    ('layers = "some"', "layers"),
])
def test_bad_probe_parameters_are_config_errors(host, params, key):
    with pytest.raises(ConfigError) as err:
        run_probe_stage(host, params)
    assert key in str(err.value)


def test_trades_trains_and_logs_robust_accuracy(host):
    r = run_toml(HEAD + """
[[stage]]
do = "train"
use = "trades"
epochs = 2
lr = 0.05
eps = 0.1
step_size = 0.03
steps = 3
""", host, track=False)
    m = r.metrics
    for key in ("loss", "train_acc", "robust_train_acc", "test_acc"):
        assert 0 <= m[f"train/trades/{key}"] < 10, key
    assert r.state.epoch == 2 and r.state.step == 2 * math.ceil(60 / 16)


def test_trades_refuses_the_mse_loss_at_its_key(host):
    text = HEAD + """
[[stage]]
do = "train"
use = "trades"
loss = "mse"
"""
    with pytest.raises(ConfigError) as err:
        parse_pipeline(text, host.registry)
    assert [issue.path for issue in err.value.issues] == ["$.stage[0].loss"]
    assert "'ce'" in str(err.value)

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples" / "collapse").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_pass_the_config_check(host, path):
    pipeline = parse_pipeline(path.read_text(), host.registry, file=str(path))
    probes = [p.spec.name for s in pipeline.stages for p in s.probes] + [s.use for s in pipeline.stages]
    # the findings sweeps measure NCC accuracy inside neural-collapse and robustness by the worst case
    wanted = ("neural-collapse", "worst-case") if path.name.endswith("_sweep.toml") else ("neural-collapse",
                                                                                         "ncc-accuracy")
    assert all(name in probes for name in wanted), (path.name, probes)


def test_periodic_probing_leaves_the_training_trajectory_unchanged(host):
    train = """
[[stage]]
do = "train"
use = "standard"
epochs = 2
lr = 0.1
"""
    plain = run_toml(HEAD + train, host, track=False).state.model.state_dict()
    probed = run_toml(HEAD + train + """probes = [{ use = "neural-collapse", attack = { use = "pgd", eps = 0.1, steps = 2 },
            noise = "gaussian" }, { use = "ncc-accuracy", attack = { use = "pgd", eps = 0.1, steps = 2 } }]
""", host, track=False).state.model.state_dict()
    assert all(torch.equal(plain[k], probed[k]) for k in plain)


def brute_force_leap(model, x_clean, y_clean, x_adv, y, x_rows=None):
    """Loops over examples and classes: nearest clean class mean of each perturbed feature.

    The class means come from (x_clean, y_clean); "fooled" needs the clean version of each
    perturbed row right, which is x_rows (default: x_clean, row for row).
    """
    x_rows = x_clean if x_rows is None else x_rows
    with torch.no_grad():
        model = model.eval()
        hc, h, pred = model.features(x_clean).double(), model.features(x_adv).double(), model(x_adv).argmax(1)
        clean_pred = model(x_rows).argmax(1)
    centres = [hc[y_clean == c].mean(0) for c in range(int(y_clean.max()) + 1)]
    fooled = leaped = stayed = near_true = 0
    for i in range(len(x_adv)):
        dists = [float((h[i] - m).norm()) for m in centres]
        nearest = dists.index(min(dists))
        near_true += nearest == int(y[i])
        if int(pred[i]) != int(y[i]) and int(clean_pred[i]) == int(y[i]):
            fooled += 1
            leaped += nearest == int(pred[i])
            stayed += nearest == int(y[i])
    return fooled, leaped, stayed, near_true


def test_leap_equals_brute_force_nearest_clean_centre_of_the_predicted_class(host):
    r = run_probe_stage(host, 'attack = { use = "flip" }\nlayers = "all"')
    state, m, p = r.state, r.metrics, "probe/neural-collapse"
    x, y = state.data.tensors("train")
    fooled, leaped, stayed, near_true = brute_force_leap(state.model, x, y, 1.0 - x, y)
    assert fooled > 0, "the flip attack must fool some example for this test to mean anything"
    assert m[f"{p}/perturbed/fooled"] == pytest.approx(fooled / len(x), abs=1e-12)
    assert m[f"{p}/perturbed/leap"] == pytest.approx(leaped / fooled, abs=1e-12)
    assert m[f"{p}/perturbed/stay"] == pytest.approx(stayed / fooled, abs=1e-12)
    assert m[f"{p}/perturbed/ncc_clean_acc"] == pytest.approx(near_true / len(x), abs=1e-12)
    # every tapped layer gets its own fractions, and they are fractions
    for key in ("leap", "stay", "ncc_clean_acc"):
        assert 0.0 <= m[f"{p}/perturbed/layer/00_2/{key}"] <= 1.0


def test_identity_attack_fools_nobody_so_no_leap_is_logged(host):
    m = run_probe_stage(host, 'attack = { use = "identity" }').metrics
    p = "probe/neural-collapse"
    assert m[f"{p}/clean/net_acc"] < 1.0  # clean errors exist, and they must not count as fooled
    assert m[f"{p}/perturbed/fooled"] == 0.0
    assert f"{p}/perturbed/leap" not in m and f"{p}/perturbed/stay" not in m


TRADES_KEEPING = """
[[stage]]
do = "train"
use = "trades"
epochs = 2
lr = 0.05
eps = 0.1
steps = 3
keep_perturbations = 40
"""


PGD_AT_KEEPING = """
[[stage]]
do = "train"
use = "adversarial"
epochs = 2
lr = 0.05
attack = { use = "pgd", eps = 0.1, steps = 3 }
keep_perturbations = 40
"""


@pytest.mark.parametrize("trainer", [TRADES_KEEPING, PGD_AT_KEEPING], ids=["trades", "pgd-at"])
def test_probe_measures_on_the_perturbations_the_trainer_made(host, trainer):
    r = run_toml(HEAD + trainer + """probes = [{ use = "neural-collapse", train_perturbations = true, every = 1 }]
[[stage]]
do = "probe"
use = "neural-collapse"
train_perturbations = true
""", host, track=False)
    from deepscope_standard import recorded_perturbations

    kept = dict(zip(("x", "x_adv", "y"), recorded_perturbations(r.state)))
    # the last epoch's record (the standard plugin's tests check which epoch), the first 40 rows only
    assert len(kept["y"]) == len(kept["x"]) == len(kept["x_adv"]) == 40
    delta = kept["x_adv"] - kept["x"]
    assert float(delta.abs().max()) <= 0.1 + 1e-6 and float(delta.abs().max()) > 0
    assert float(kept["x_adv"].min()) >= 0.0 and float(kept["x_adv"].max()) <= 1.0
    # the kept clean rows are training examples with their labels
    x, y = r.state.data.tensors("train")
    rows = [int(torch.nonzero((x == row).flatten(1).all(1))[0]) for row in kept["x"]]
    assert torch.equal(y[rows], kept["y"])
    # the probe's train_adv metrics are those of the kept rows (brute force on the final model)
    m, p = r.metrics, "probe/neural-collapse"
    model = r.state.model.eval()
    with torch.no_grad():
        acc = float((model(kept["x_adv"]).argmax(1) == kept["y"]).double().mean())
    assert m[f"{p}/train_adv/net_acc"] == pytest.approx(acc, abs=1e-12)
    fooled, leaped, _, near_true = brute_force_leap(model, x, y, kept["x_adv"], kept["y"], kept["x"])
    assert m[f"{p}/train_adv/ncc_clean_acc"] == pytest.approx(near_true / 40, abs=1e-12)
    assert fooled > 0, "some kept perturbation must fool the final model for the leap check to mean anything"
    assert m[f"{p}/train_adv/leap"] == pytest.approx(leaped / fooled, abs=1e-12)
    assert math.isfinite(m[f"{p}/train_adv/nc1"])
    history = r.state.extras["deepscope_collapse/history"][p]
    assert [h["epoch"] for h in history] == [1, 2, 2]  # periodic after each epoch, then the probe stage
    assert all(math.isfinite(h["train_adv/nc1"]) for h in history)


def test_train_perturbations_without_a_keeping_trainer_is_a_config_error(host):
    with pytest.raises(ConfigError) as err:
        run_probe_stage(host, "train_perturbations = true")
    assert "train_perturbations" in str(err.value) and "keep_perturbations" in str(err.value)
