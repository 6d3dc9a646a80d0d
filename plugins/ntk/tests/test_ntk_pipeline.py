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
