"""kernel-regression and kernel-fit inside real pipelines: Fashion-MNIST sample, stock attacks, resume."""

from __future__ import annotations

from pathlib import Path

import deepscope_standard
import pytest

import deepscope_ntk
from deepscope import hookimpl, parse_pipeline, run_pipeline
from deepscope.testing import make_host, run_toml

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "ntk" / "krr-fmnist-sample.toml"


@pytest.fixture(scope="module")
def host():
    return make_host(deepscope_standard, deepscope_ntk)


def test_the_example_fits_two_fashion_classes_and_pgd_breaks_it(host):
    result = run_toml(EXAMPLE.read_text(), host, track=False)
    m = result.metrics
    assert result.status == "FINISHED"
    assert m["train/kernel-fit/support"] == 400
    assert m["train/kernel-fit/train_acc"] == 1.0  # ridgeless: interpolates
    assert m["train/kernel-fit/test_acc"] > 0.8  # chance is 0.5 (T-shirt against shirt)
    assert m["attack/pgd/clean_acc"] > 0.8
    assert m["attack/fgsm/robust_acc"] < m["attack/fgsm/clean_acc"]
    assert m["attack/pgd/robust_acc"] < m["attack/pgd/clean_acc"] - 0.3  # gradients flow through the kernel


PIPELINE = """
[run]
name = "krr-resume"
checkpoint_every = 1
seed = 0
[data]
use = "fashion-mnist-sample"
classes = [0, 6]
[model]
use = "kernel-regression"
kernel = "analytic-nngp"
targets = "centered"
reg = 1e-4
[[stage]]
do = "train"
use = "kernel-fit"
n = 100
test_n = 200
[[stage]]
do = "probe"
use = "accuracy"
"""


def test_a_resumed_run_keeps_the_fitted_support(host, tmp_mlflow):
    """Stopped before the probe, the run resumes from the checkpoint after kernel-fit: the support comes
    back from the model's extra state, so the probe sees the same predictor as an uninterrupted run."""

    class StopAtProbe:
        run_id = None

        @hookimpl
        def deepscope_run_started(self, run):
            self.run_id = run.tracker.run_id

        @hookimpl
        def deepscope_stage_started(self, run, stage):
            if stage.do == "probe":
                raise KeyboardInterrupt

    straight = run_toml(PIPELINE, host, track=False)
    stopper = StopAtProbe()
    with pytest.raises(KeyboardInterrupt):
        run_toml(PIPELINE, make_host(deepscope_standard, deepscope_ntk, stopper), tracking_uri=tmp_mlflow)
    resumed = run_pipeline(parse_pipeline(PIPELINE, host.registry), host, tracking_uri=tmp_mlflow,
                           resume_run_id=stopper.run_id)
    assert resumed.status == "FINISHED"
    assert resumed.state.model.body.fitted
    assert resumed.metrics["probe/accuracy/acc"] == straight.metrics["probe/accuracy/acc"] > 0.8


class FirstImagesDistiller:
    """A stand-in distiller: the first 10 training images of each class, with float (centred) labels."""

    @hookimpl
    def deepscope_register_distillers(self, register):
        register("first-images", first_images)


class _FirstImages:
    def __init__(self, config=None):
        pass

    def distill(self, state, ctx):
        import torch

        from deepscope import SyntheticData

        x, y = state.data.tensors("train")
        idx = torch.cat([torch.nonzero(y == c).flatten()[:10] for c in range(2)])
        labels = torch.nn.functional.one_hot(y[idx], 2).double() - 0.5
        return SyntheticData(x[idx], labels.float())


def first_images(config=None):
    return _FirstImages(config)


def test_kernel_fit_on_a_distilled_set_uses_its_images_and_float_labels(host):
    text = PIPELINE.replace("[[stage]]\ndo = \"train\"", "[[stage]]\ndo = \"distill\"\nuse = \"first-images\"\n"
                            "name = \"first\"\n[[stage]]\ndo = \"train\"\ndata = \"synthetic/first\"", 1)
    result = run_toml(text, make_host(deepscope_standard, deepscope_ntk, FirstImagesDistiller()), track=False)
    m = result.metrics
    assert m["train/kernel-fit/support"] == 20  # the distilled set, not 100 real images
    assert m["train/kernel-fit/train_acc"] == 1.0
    assert m["probe/accuracy/acc"] > 0.7
    body = result.state.model.body
    assert body.targets.shape == (20, 2) and set(body.targets.unique().tolist()) == {-0.5, 0.5}


AFTER_TRAINING = """
[run]
name = "krr-after-training"
seed = 0
[data]
use = "fashion-mnist-sample"
classes = [0, 6]
[model]
use = "ntk-mlp"
width = 32
[[stage]]
do = "train"
use = "gd-mse"
steps = 5
lr = 0.3
n = 32
[[stage]]
do = "train"
use = "kernel-fit"
name = "after"
n = 20
test_n = 40
krr = { use = "kernel-regression", kernel = "empirical-ntk", of_run_model = true, targets = "centered", reg = 0.1 }
"""


def test_kernel_fit_with_the_run_model_fits_the_trained_networks_own_ntk(host):
    """The after-training kernel: kernel-fit's krr takes a frozen copy of the trained ntk-mlp; its test
    accuracy equals a KRR written by hand on empirical_ntk(trained network), and the run's model is unchanged."""
    import torch

    from deepscope_ntk.empirical import empirical_ntk
    from deepscope_ntk.krr import balanced_indices, encode_targets

    result = run_toml(AFTER_TRAINING, host, track=False)
    assert result.status == "FINISHED"
    state = result.state
    model = state.model
    assert type(model.body).__name__ == "NTKMLP"  # the run's model stays the network
    x, y = state.data.tensors("train")
    idx = balanced_indices(y, 20, 2, True)
    xs = model.to_input(x[idx])
    test_x, test_y = state.data.tensors("test", 40)
    gram = empirical_ntk(model.body, xs, mode="trace", dtype=torch.float64) / 2
    cross = empirical_ntk(model.body, model.to_input(test_x), xs, mode="trace", dtype=torch.float64) / 2
    lam = 0.1 * torch.trace(gram).item() / 20  # lambda carries the trained kernel's trace: a sharp check
    assert result.metrics["train/after/lambda"] == pytest.approx(lam, rel=1e-9)
    alpha = torch.linalg.solve(gram + lam * torch.eye(20, dtype=torch.float64), encode_targets(y[idx], 2, "centered"))
    want = ((cross @ alpha).argmax(1) == test_y).double().mean().item()
    assert result.metrics["train/after/test_acc"] == pytest.approx(want, abs=1e-12)
    assert result.metrics["train/after/support"] == 20


def test_of_run_model_on_the_runs_own_model_is_rejected_at_load(host):
    from deepscope import ConfigError

    own = PIPELINE.replace('kernel = "analytic-nngp"', 'kernel = "empirical-ntk"\nof_run_model = true')
    with pytest.raises(ConfigError, match="of_run_model"):
        parse_pipeline(own, host.registry)
    parse_pipeline(AFTER_TRAINING, host.registry)  # nested in kernel-fit's krr it is fine
