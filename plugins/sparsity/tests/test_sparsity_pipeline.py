"""The plugin inside real pipelines: registration, the effective target, the probe, MLflow."""

from __future__ import annotations

import math

import attrs
import pytest
import torch
from torch import nn

import deepscope_sparsity
from deepscope import hookimpl, param, positive
from deepscope.testing import make_host, run_toml, tiny_data


@attrs.define
class WidthConfig:
    hidden: int = param(24, doc="hidden width", validator=positive)


@attrs.define
class SgdConfig:
    epochs: int = param(1, doc="epochs", validator=positive)


class Sgd:
    def __init__(self, config):
        self.config = config

    def train(self, state, ctx):
        opt = torch.optim.SGD(state.model.parameters(), lr=0.1)
        for _ in range(self.config.epochs):
            for x, y in state.data.train_loader():
                loss = nn.functional.cross_entropy(state.model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                state.apply_masks()
                state.step += 1
            ctx.epoch_end({"loss": loss.item()})


class Components:
    @hookimpl
    def deepscope_register_datasets(self, register):
        register("sp-tiny", lambda c: tiny_data(n_train=64, shape=(1, 6, 6), classes=4), None)

    @hookimpl
    def deepscope_register_models(self, register):
        register("sp-mlp", lambda c, info: nn.Sequential(
            nn.Flatten(), nn.Linear(info.num_inputs, c.hidden), nn.ReLU(), nn.Linear(c.hidden, c.hidden),
            nn.ReLU(), nn.Linear(c.hidden, info.num_classes)), WidthConfig)

    @hookimpl
    def deepscope_register_trainers(self, register):
        register("sp-sgd", Sgd, SgdConfig)


def host():
    return make_host(Components(), deepscope_sparsity)


def pipeline(stages: str) -> str:
    return f"""
    [run]
    name = "sparsity-test"
    seed = 0
    [data]
    use = "sp-tiny"
    [model]
    use = "sp-mlp"
    {stages}
    """


def test_every_component_is_registered():
    registry = host().registry
    assert registry.names("pruner") == ["grasp", "iterative-snip", "lamp", "magnitude", "random", "random/grasp",
                                        "random/iterative-snip", "random/lamp", "random/magnitude", "random/snip",
                                        "random/synflow", "snip", "synflow"]
    assert "effective" in registry.names("prune-target")
    assert registry.names("probe") == ["effective-sparsity"]


def test_effective_target_and_probe_in_a_pipeline(tmp_mlflow):
    result = run_toml(pipeline("""
    [[stage]]
    do = "prune"
    use = "random"
    quota = "uniform"
    compression = 40
    target = "effective"
    [[stage]]
    do = "probe"
    use = "effective-sparsity"
    """), host(), tracking_uri=tmp_mlflow)
    assert result.status == "FINISHED"
    m = result.metrics
    key = "probe/effective-sparsity"
    assert m[f"{key}/effective_compression"] <= 40.0 + 1e-9
    assert m[f"{key}/effective_compression"] > 30.0
    assert m[f"{key}/direct_compression"] < m[f"{key}/effective_compression"]
    assert m[f"{key}/direct_sparsity"] == pytest.approx(1 - 1 / m[f"{key}/direct_compression"])
    names = ["body.1.weight", "body.3.weight", "body.5.weight"]
    for name in names:
        assert 0.0 <= m[f"{key}/direct_sparsity/{name}"] <= m[f"{key}/effective_sparsity/{name}"] <= 1.0
    from mlflow.tracking import MlflowClient

    artifacts = [a.path for a in MlflowClient(tmp_mlflow).list_artifacts(result.run_id, key)]
    assert f"{key}/effective_sparsity.png" in artifacts


def test_random_snip_keeps_snips_layer_densities_in_a_pipeline(tmp_mlflow):
    def run(use, target="direct"):
        return run_toml(pipeline(f"""
        [[stage]]
        do = "prune"
        use = "{use}"
        compression = 20
        samples = 64
        batch_size = 32
        target = "{target}"
        [[stage]]
        do = "probe"
        use = "effective-sparsity"
        plot = false
        """), host(), tracking_uri=tmp_mlflow)

    snip, within = run("snip"), run("random/snip")
    key = "probe/effective-sparsity/direct_sparsity"
    names = ["body.1.weight", "body.3.weight", "body.5.weight"]
    assert [within.metrics[f"{key}/{n}"] for n in names] == [snip.metrics[f"{key}/{n}"] for n in names]
    assert len({snip.metrics[f"{key}/{n}"] for n in names}) == 3  # SNIP's quotas are not uniform here
    effective = run("random/snip", "effective")
    assert effective.status == "FINISHED"
    assert 15 < effective.metrics["probe/effective-sparsity/effective_compression"] <= 20 + 1e-9


def test_disconnected_network_logs_infinite_compression(tmp_mlflow):
    # uniform pruning at compression 600 leaves under one weight in the 4x24 head: nothing reaches the output
    result = run_toml(pipeline("""
    [[stage]]
    do = "prune"
    use = "random"
    compression = 600
    [[stage]]
    do = "probe"
    use = "effective-sparsity"
    plot = false
    """), host(), tracking_uri=tmp_mlflow)
    assert result.metrics["probe/effective-sparsity/effective_sparsity"] == 1.0
    assert math.isinf(result.metrics["probe/effective-sparsity/effective_compression"])


def test_train_then_magnitude_with_rewind(tmp_mlflow):
    result = run_toml(pipeline("""
    [[stage]]
    do = "train"
    use = "sp-sgd"
    [[stage]]
    do = "prune"
    use = "magnitude"
    compression = 10
    rewind = true
    """), host(), tracking_uri=tmp_mlflow)
    state = result.state
    for name, p in state.prunable().items():
        assert torch.equal(p.detach(), state.init_state[name] * state.masks[name])
    assert result.metrics["prune/magnitude/direct_sparsity"] == pytest.approx(0.9, abs=1e-3)


def test_periodic_probe_during_training(tmp_mlflow):
    result = run_toml(pipeline("""
    [[stage]]
    do = "prune"
    use = "synflow"
    compression = 20
    iterations = 10
    [[stage]]
    do = "train"
    use = "sp-sgd"
    epochs = 2
    probes = [{ use = "effective-sparsity", every = 1, plot = false }]
    """), host(), tracking_uri=tmp_mlflow)
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tmp_mlflow).get_metric_history(result.run_id, "probe/effective-sparsity/direct_compression")
    assert [h.step for h in history] == [1, 2]
    assert all(h.value == pytest.approx(20.0, rel=0.01) for h in history)


def test_lenet_300_100_of_the_standard_plugin(tmp_mlflow):
    import deepscope_standard

    def run(target):
        return run_toml(f"""
        [run]
        name = "sparsity-lenet"
        seed = 0
        [data]
        use = "fashion-mnist-sample"
        [model]
        use = "lenet-300-100"
        [[stage]]
        do = "prune"
        use = "random"
        compression = 100
        target = "{target}"
        [[stage]]
        do = "probe"
        use = "effective-sparsity"
        plot = false
        """, make_host(deepscope_standard, deepscope_sparsity), tracking_uri=tmp_mlflow).metrics

    key = "probe/effective-sparsity"
    direct = run("direct")
    assert direct[f"{key}/direct_compression"] == pytest.approx(100.0)
    assert direct[f"{key}/effective_compression"] > 300  # uniform random disconnects LeNet-300-100
    effective = run("effective")
    assert 95 < effective[f"{key}/effective_compression"] <= 100.0
    assert effective[f"{key}/direct_compression"] < 60
    assert effective["prune/random/effective_search_evaluations"] <= math.ceil(math.log2(266_200)) + 2
