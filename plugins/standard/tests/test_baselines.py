"""synthetic-baseline: class counts, membership in the real set, means against a direct computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepscope import ConfigError, hookimpl
from deepscope.testing import make_host, run_toml, tiny_data
from deepscope_standard import distill_config

CLASSES = 3


class Plugin:
    @hookimpl
    def deepscope_register_datasets(self, register):
        register("tiny", lambda config: tiny_data(n_train=60, n_test=16, shape=(1, 4, 4), classes=CLASSES, seed=2),
                 None)

    @hookimpl
    def deepscope_register_models(self, register):
        register("lin", lambda config, info: nn.Sequential(nn.Flatten(), nn.Linear(16, info.num_classes)), None)

    @hookimpl
    def deepscope_register_distillers(self, register):
        distill_config.register_distillers(register)


def baseline(seed: int = 0, draw_seed: int | None = None, **params):
    if draw_seed is not None:
        params["seed"] = draw_seed
    lines = "\n".join(f"        {k} = {v!r}".replace("'", '"') for k, v in params.items())
    result = run_toml(f"""
        [run]
        name = "t"
        seed = {seed}
        [data]
        use = "tiny"
        [model]
        use = "lin"
        [[stage]]
        do = "distill"
        use = "synthetic-baseline"
{lines}
        """, make_host(Plugin()), track=False)
    return result.state.synthetic, result.state.real_data.tensors("train")


def class_counts(y):
    return torch.bincount(y, minlength=CLASSES).tolist()


@pytest.mark.parametrize("ipc", [1, 4])
def test_random_real_is_ipc_distinct_real_images_per_class(ipc):
    synthetic, (x, y) = baseline(method="random-real", ipc=ipc)
    assert synthetic.label_kind == "hard" and class_counts(synthetic.y) == [ipc] * CLASSES
    idx = synthetic.extras["indices"]
    assert len(set(idx.tolist())) == len(idx)  # distinct
    for image, label, i in zip(synthetic.x, synthetic.y, idx):
        matches = [j for j in range(len(x)) if torch.equal(x[j], image)]  # a real training image, by search
        assert i.item() in matches and y[i] == label


def test_random_real_is_seeded():
    a, _ = baseline(method="random-real", ipc=3)
    b, _ = baseline(method="random-real", ipc=3)
    c, _ = baseline(seed=1, method="random-real", ipc=3)
    d, _ = baseline(seed=1, method="random-real", ipc=3, draw_seed=3000)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert torch.equal(a.x, d.x)  # an explicit seed is the draw's seed, whatever the run's


def test_one_class_mean_per_class_is_the_mean_of_its_images():
    synthetic, (x, y) = baseline(method="class-means", ipc=1)
    assert synthetic.y.tolist() == list(range(CLASSES))
    for c in range(CLASSES):
        direct = sum(x[j].double() for j in range(len(x)) if y[j] == c) / int((y == c).sum())
        torch.testing.assert_close(synthetic.x[c].double(), direct, rtol=0, atol=1e-6)


def test_class_means_of_several_parts_average_back_to_the_class_mean():
    synthetic, (x, y) = baseline(method="class-means", ipc=3)
    assert class_counts(synthetic.y) == [3] * CLASSES
    for c in range(CLASSES):
        n = int((y == c).sum())
        sizes = [n // 3 + (1 if i < n % 3 else 0) for i in range(3)]  # tensor_split's part sizes
        parts = synthetic.x[synthetic.y == c].double()
        weighted = sum(s * p for s, p in zip(sizes, parts)) / n
        torch.testing.assert_close(weighted, x[y == c].double().mean(0), rtol=0, atol=1e-6)
        assert not torch.allclose(parts[0], parts[1])


def test_as_many_parts_as_images_gives_the_images_themselves():
    _, (x, y) = baseline(method="random-real", ipc=1)
    smallest = min(class_counts(y))
    synthetic, _ = baseline(method="class-means", ipc=smallest)
    c = int(torch.tensor(class_counts(y)).argmin())
    got = sorted(tuple(v.tolist()) for v in synthetic.x[synthetic.y == c].flatten(1))
    real = sorted(tuple(v.tolist()) for v in x[y == c].flatten(1))
    assert got == real


def test_ipc_larger_than_a_class_is_a_config_error():
    with pytest.raises(ConfigError, match="ipc"):
        baseline(method="random-real", ipc=60)
