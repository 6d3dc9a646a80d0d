"""The synthetic-set image grid: cells hold the right images, input-space sets come back to pixels, one PNG."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch import nn

from deepscope import DatasetInfo, SyntheticData, hookimpl
from deepscope.testing import make_host, run_toml, tiny_data
from deepscope_standard import distill_config, log_synthetic_grid
from deepscope_standard.grid import grid_tensor, to_pixels

INFO = DatasetInfo("t", 3, (3, 4, 5), (0.5, 0.4, 0.3), (0.2, 0.25, 0.5), ("cat", "dog", "eel"))


class FakeContext:
    def __init__(self):
        self.artifacts = {}
        self.state = SimpleNamespace(tracker=None)

    def log_artifact(self, name, data):
        self.artifacts[name] = data


def a_set(n_per_class=(2, 3, 1), space="pixel"):
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([c for c, n in enumerate(n_per_class) for _ in range(n)])[torch.randperm(sum(n_per_class),
                                                                                              generator=g)]
    return SyntheticData(torch.rand(len(y), 3, 4, 5, generator=g), y, space=space)


def test_each_cell_holds_the_jth_image_of_its_class_in_order():
    s = a_set()
    grid = grid_tensor(s.x, s.y, 3, per_class=10, pad=1)
    assert grid.shape == (3, 3 * 5 + 1, 3 * 6 + 1)  # 3 rows; 3 columns (the largest class)
    for c in range(3):
        members = [i for i in range(len(s.y)) if s.y[i] == c]
        for j in range(3):
            cell = grid[:, 1 + c * 5:1 + c * 5 + 4, 1 + j * 6:1 + j * 6 + 5]
            expected = s.x[members[j]] if j < len(members) else torch.ones(3, 4, 5)
            assert torch.equal(cell, expected)
    assert grid_tensor(s.x, s.y, 3, per_class=1).shape[2] == 1 * 6 + 1


def test_input_space_sets_are_de_normalized_back_to_their_pixels():
    pixels = a_set()
    mean, std = torch.tensor(INFO.mean).view(1, 3, 1, 1), torch.tensor(INFO.std).view(1, 3, 1, 1)
    normalized = SyntheticData((pixels.x - mean) / std, pixels.y, space="input")
    torch.testing.assert_close(to_pixels(normalized, INFO), pixels.x, rtol=0, atol=1e-6)
    flat = SyntheticData(pixels.x.flatten(1), pixels.y)
    assert torch.equal(to_pixels(flat, INFO), pixels.x)
    wild = SyntheticData(pixels.x * 4 - 2, pixels.y)
    assert to_pixels(wild, INFO).min() == 0 and to_pixels(wild, INFO).max() == 1


def test_the_grid_is_one_png_artifact():
    ctx = FakeContext()
    data = log_synthetic_grid(ctx, a_set(), INFO)
    assert list(ctx.artifacts) == ["synthetic_grid.png"] and ctx.artifacts["synthetic_grid.png"] == data
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size[0] > 50 and image.size[1] > 50


class Plugin:
    @hookimpl
    def deepscope_register_datasets(self, register):
        register("tiny", lambda config: tiny_data(n_train=30, n_test=8, shape=(1, 4, 4), classes=3, seed=2), None)

    @hookimpl
    def deepscope_register_models(self, register):
        register("lin", lambda config, info: nn.Sequential(nn.Flatten(), nn.Linear(16, info.num_classes)), None)

    @hookimpl
    def deepscope_register_distillers(self, register):
        distill_config.register_distillers(register)

    @hookimpl
    def deepscope_register_probes(self, register):
        distill_config.register_probes(register)


def test_the_probe_draws_the_named_set():
    result = run_toml("""
        [run]
        name = "t"
        seed = 0
        [data]
        use = "tiny"
        [model]
        use = "lin"
        [[stage]]
        do = "distill"
        use = "synthetic-baseline"
        name = "means"
        method = "class-means"
        ipc = 2
        [[stage]]
        do = "probe"
        use = "synthetic-grid"
        set = "synthetic/means"
        """, make_host(Plugin()), track=False)
    assert result.metrics["probe/synthetic-grid/images"] == 6


def test_an_input_space_set_without_an_inverse_cannot_be_drawn():
    info = DatasetInfo("t", 3, (3, 4, 5), INFO.mean, INFO.std, preprocess=nn.Identity())
    with pytest.raises(TypeError, match="inverse"):
        to_pixels(a_set(space="input"), info)


def test_the_baseline_distiller_logs_its_grid_when_the_run_is_tracked():
    from deepscope_standard import SyntheticBaseline

    data = tiny_data(n_train=30, n_test=8, shape=(1, 4, 4), classes=3, seed=2)
    state = SimpleNamespace(data=data, info=data.info, seed=0, tracker=object())
    ctx = FakeContext()
    ctx.state = state
    SyntheticBaseline(distill_config.SyntheticBaselineConfig(ipc=2)).distill(state, ctx)
    assert list(ctx.artifacts) == ["synthetic_grid.png"]
    ctx.artifacts.clear()
    SyntheticBaseline(distill_config.SyntheticBaselineConfig(ipc=2, grid=False)).distill(state, ctx)
    assert ctx.artifacts == {}
