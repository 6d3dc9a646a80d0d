"""The scatternet and vonenet models: shapes, config errors, gradients, noise switches, back-ends."""

from __future__ import annotations

import pytest
import scatternet_testkit
import torch

import deepscope_scatternet
from deepscope_scatternet.configs import ScatterNetConfig, VOneNetConfig
from deepscope_scatternet.noise import set_noise_frozen
from deepscope_scatternet.scattering import ScatteringFrontEnd, build_scatternet
from deepscope_scatternet.vone import build_vonenet
from deepscope import ConfigError
from deepscope import DatasetInfo
from deepscope.testing import make_host, run_toml


def info(channels=1, size=32, classes=10):
    return DatasetInfo("t", classes, (channels, size, size), (0.5,) * channels, (0.25,) * channels)


def closed_form_channels(J, L, order):
    """Paths: the low-pass, J*L first-order paths, and second-order pairs j1 < j2 with L^2 angles."""
    first = 1 + J * L
    second = sum(L * L for j1 in range(J) for j2 in range(J) if j1 < j2)
    return first + (second if order == 2 else 0)


def test_j2_l8_on_32x32_gives_81_channels_per_colour_at_8x8():
    torch.manual_seed(0)
    for channels in (1, 3):
        model = build_scatternet(ScatterNetConfig(noise=False), info(channels))
        front = model.frontend(torch.rand(2, channels, 32, 32))
        assert front.shape == (2, 81 * channels, 8, 8)
        assert model(torch.rand(2, channels, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("J,L,order", [(1, 4, 1), (1, 8, 2), (2, 4, 2), (3, 6, 2), (3, 8, 1)])
def test_channel_count_matches_closed_form(J, L, order):
    front = ScatteringFrontEnd((2, 16, 16), J=J, L=L, max_order=order)
    assert front.out_shape == (2 * closed_form_channels(J, L, order), 16 // 2 ** J, 16 // 2 ** J)


def test_too_large_J_is_a_config_error_on_key_J():
    with pytest.raises(ConfigError) as err:
        build_scatternet(ScatterNetConfig(J=6), info(size=32))
    assert err.value.issues[0].path == "J" and "J <= 5" in err.value.issues[0].message


def test_too_large_J_in_a_pipeline_names_model_J(tmp_mlflow):
    host = make_host(scatternet_testkit, deepscope_scatternet)
    text = """
        [run]
        name = "bad-j"
        seed = 0
        [data]
        use = "stripes"
        size = 16
        [model]
        use = "scatternet"
        J = 5
    """
    with pytest.raises(ConfigError) as err:
        run_toml(text, host, tracking_uri=tmp_mlflow)
    assert [i.path for i in err.value.issues] == ["$.model.J"]
    assert err.value.exit_code == 2


def test_scattering_front_end_passes_gradcheck_in_float64():
    front = ScatteringFrontEnd((1, 8, 8), J=1, L=2, max_order=2, noise_std=0.1, normalize="none",
                               frozen=True, seed=3).double()
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.1
    assert torch.autograd.gradcheck(front, (x.requires_grad_(True),), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("build,config", [
    (build_scatternet, ScatterNetConfig(noise_std=0.5, freeze_noise=True)),
    (build_scatternet, ScatterNetConfig(noise_std=0.5, noise=False)),
    (build_scatternet, ScatterNetConfig(noise_std=0.0)),
    (build_vonenet, VOneNetConfig(simple_channels=8, complex_channels=8, freeze_noise=True)),
    (build_vonenet, VOneNetConfig(simple_channels=8, complex_channels=8, noise=False)),
])
def test_frozen_or_zero_noise_is_deterministic(build, config):
    torch.manual_seed(0)
    model = build(config, info(3)).eval()
    x = torch.rand(4, 3, 32, 32)
    torch.manual_seed(1)
    first = model(x)
    torch.manual_seed(2)
    assert torch.equal(first, model(x))


@pytest.mark.parametrize("build,config", [
    (build_scatternet, ScatterNetConfig(noise_std=0.5)),
    (build_vonenet, VOneNetConfig(simple_channels=8, complex_channels=8, noise_mode="neuronal")),
    (build_vonenet, VOneNetConfig(simple_channels=8, complex_channels=8, noise_mode="gaussian")),
])
def test_noise_stays_on_in_eval_mode_and_can_be_frozen_later(build, config):
    torch.manual_seed(0)
    model = build(config, info(3)).eval()
    x = torch.rand(4, 3, 32, 32)
    assert not torch.equal(model(x), model(x))
    assert set_noise_frozen(model, True, seed=5) == 1
    assert torch.equal(model(x), model(x))
    set_noise_frozen(model, False)
    assert not torch.equal(model(x), model(x))


def test_scattering_noise_has_the_requested_std_and_zero_mean():
    front = ScatteringFrontEnd((1, 32, 32), noise_std=0.3, normalize="none")
    x = torch.rand(64, 1, 32, 32)
    residual = front(x) - front.coefficients(x)
    assert residual.numel() == 64 * 81 * 64
    # 331,776 i.i.d. N(0, 0.09) samples: the std of the sample std is ~0.3/sqrt(2n) = 3.7e-4
    assert abs(residual.std().item() - 0.3) < 0.003
    assert abs(residual.mean().item()) < 0.003


def test_frozen_draw_depends_on_the_seed():
    a = ScatteringFrontEnd((1, 16, 16), J=2, noise_std=1.0, normalize="none", frozen=True, seed=0)
    b = ScatteringFrontEnd((1, 16, 16), J=2, noise_std=1.0, normalize="none", frozen=True, seed=1)
    x = torch.rand(2, 1, 16, 16)
    assert not torch.equal(a(x), b(x))


def test_backend_is_built_from_the_registry_on_the_front_end_output(tmp_mlflow):
    host = make_host(scatternet_testkit, deepscope_scatternet)
    scatternet_testkit.SEEN_INFOS.clear()
    text = """
        [run]
        name = "backend"
        seed = 0
        [data]
        use = "stripes"
        channels = 3
        [model]
        use = "scatternet"
        backend = { use = "recorder", hidden = 5 }
    """
    result = run_toml(text, host, tracking_uri=tmp_mlflow)
    seen = scatternet_testkit.SEEN_INFOS[-1]
    assert seen.input_shape == (243, 8, 8) and seen.num_classes == 2
    assert seen.mean == (0.0,) * 243 and seen.std == (1.0,) * 243
    assert result.state.model.classifier.in_features == 5


def test_vonenet_backend_sees_the_bottleneck_shape(tmp_mlflow):
    host = make_host(scatternet_testkit, deepscope_scatternet)
    scatternet_testkit.SEEN_INFOS.clear()
    text = """
        [run]
        name = "vone-backend"
        seed = 0
        [data]
        use = "stripes"
        [model]
        use = "vonenet"
        simple_channels = 4
        complex_channels = 6
        bottleneck = 7
        stride = 2
        backend = { use = "recorder" }
    """
    run_toml(text, host, tracking_uri=tmp_mlflow)
    assert scatternet_testkit.SEEN_INFOS[-1].input_shape == (7, 16, 16)


def test_gabor_filters_are_fixed_and_not_prunable():
    model = build_vonenet(VOneNetConfig(simple_channels=4, complex_channels=4), info(3))
    names = {n for n, p in model.named_parameters()}
    assert not any("vone" in n for n in names)
    assert "frontend.bottleneck.weight" in names


def test_validate_rejects_too_large_J_and_a_backend_too_deep_for_the_scattering_output():
    import deepscope_standard
    from deepscope import ConfigError, parse_pipeline
    from deepscope.testing import make_host

    host = make_host(deepscope_standard, deepscope_scatternet)
    base = '[run]\nname = "j"\nseed = 0\n[data]\nuse = "fashion-mnist-sample"\n[model]\nuse = "scatternet"\n'
    with pytest.raises(ConfigError, match=r"\$\.model\.J: J=6 is too large for 28x28 inputs"):
        parse_pipeline(base + "J = 6\n", host.registry)
    with pytest.raises(ConfigError, match=r"\$\.model\.backend\.depth: the input is too small for convnet of "
                                          r"depth 4 \(7x7 inputs\)"):
        parse_pipeline(base + 'J = 2\nbackend = { use = "convnet", depth = 4 }\n', host.registry)
    assert parse_pipeline(base + "J = 2\n", host.registry).model.config.J == 2
