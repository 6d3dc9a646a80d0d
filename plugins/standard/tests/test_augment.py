"""DSA and flip-rotate: probability 0 is the identity, replays are the same transform, gradients reach x."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deepscope_standard import DSA, flip_rotate

OPS = ["color", "crop", "cutout", "flip", "scale", "rotate"]


def images(n=6, seed=0, size=8):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("strategy", OPS + ["color_crop_cutout_flip_scale_rotate"])
def test_probability_zero_is_the_identity_and_differentiable(strategy):
    x = images().requires_grad_(True)
    out = DSA(strategy, single=False, prob=0.0)(x, seed=3)
    assert torch.equal(out, x)
    w = torch.randn_like(x)
    (grad,) = torch.autograd.grad((out * w).sum(), x)
    assert torch.equal(grad, w)


def test_flip_rotate_probability_zero_is_the_identity_and_differentiable():
    x = images().requires_grad_(True)
    for seed in range(4):  # both branches (flip, rotate) are drawn among these
        out = flip_rotate(x, torch.Generator().manual_seed(seed), prob=0.0)
        assert torch.equal(out, x)
        w = torch.randn_like(x)
        assert torch.equal(torch.autograd.grad((out * w).sum(), x)[0], w)


@pytest.mark.parametrize("op", OPS)
def test_replayed_parameters_are_the_same_transform_on_two_batches(op):
    # every DSA op is affine in x, so one transform T satisfies T(a x1 + (1 - a) x2) = a T(x1) + (1 - a) T(x2);
    # two different draws would not
    dsa = DSA(op)
    x1, x2 = images(seed=1), images(seed=2)
    params = dsa.sample(x1.shape, seed=11)
    mixed = dsa.apply(0.3 * x1 + 0.7 * x2, params)
    torch.testing.assert_close(mixed, 0.3 * dsa.apply(x1, params) + 0.7 * dsa.apply(x2, params), rtol=0, atol=1e-12)
    torch.testing.assert_close(dsa(x1, seed=11), dsa.apply(x1, params), rtol=0, atol=0)
    assert not torch.equal(dsa(x1, seed=11), x1)  # it does something


def test_different_seeds_draw_different_transforms_and_the_global_rng_is_untouched():
    dsa = DSA("rotate")
    x = images()
    before = torch.get_rng_state()
    a, b = dsa(x, seed=1), dsa(x, seed=2)
    assert torch.equal(torch.get_rng_state(), before)
    assert not torch.allclose(a, b)


def test_a_siamese_draw_replays_on_batches_of_any_size():
    dsa = DSA(siamese=True, single=False)
    real, synthetic = images(n=7, seed=1), images(n=2, seed=2)
    params = dsa.sample(real.shape, seed=5)
    both = dsa.apply(torch.cat([synthetic, real]), params)
    torch.testing.assert_close(dsa.apply(synthetic, params), both[:2], rtol=0, atol=1e-12)
    torch.testing.assert_close(dsa.apply(real, params), both[2:], rtol=0, atol=1e-12)
    per_image = DSA(single=False).sample(real.shape, seed=5)
    with pytest.raises(ValueError, match="siamese"):
        DSA(single=False).apply(synthetic, per_image)


@pytest.mark.parametrize("op", OPS)
def test_gradients_reach_the_input_as_finite_differences_say(op):
    dsa = DSA(op)
    x = images(n=2, size=6).requires_grad_(True)
    params = dsa.sample(x.shape, seed=4)
    assert torch.autograd.gradcheck(lambda t: dsa.apply(t, params), (x,), eps=1e-6, atol=1e-6)


def test_flip_flips_exactly_the_drawn_images():
    dsa = DSA("flip")
    x = images(n=32)
    out = dsa(x, seed=0)
    flipped = [torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and 4 < sum(flipped) < 28


def translated(x, dy, dx):
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_crop_is_an_integer_translation_with_zero_fill_within_the_pad():
    x = images(n=16, size=8)  # pad = int(8 * 0.125 + 0.5) = 1
    out = DSA("crop")(x, seed=2)
    shifts = []
    for o, xi in zip(out, x):
        found = [(dy, dx) for dy in range(-1, 2) for dx in range(-1, 2) if torch.equal(o, translated(xi, dy, dx))]
        assert found, "not a translation by at most the pad"
        shifts.append(found[0])
    assert len(set(shifts)) > 1


def test_cutout_zeroes_one_square_of_half_the_side():
    x = images(n=8, size=8) + 0.1  # no zero pixels of its own
    out = DSA("cutout")(x, seed=3)
    for o in out:
        zero = (o == 0).all(0)
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert zero.sum() == len(rows) * len(cols)  # a rectangle
        assert 1 <= len(rows) <= 4 and 1 <= len(cols) <= 4  # the 4x4 square, clipped at the border
        assert int(rows.max() - rows.min()) + 1 == len(rows)


def test_an_unknown_op_is_an_error():
    with pytest.raises(ValueError, match="unknown DSA op"):
        DSA("color_blur")
