"""Task sequences: permutations reproducible from (seed, task), task 0 = base data, rotations, class splits."""

from __future__ import annotations

import pytest
import torch

from deepscope_impressions.datasets import task_permutation


def images(bundle, t, split="test"):
    return bundle.task(t).tensors(split)


def test_the_permutation_of_a_task_is_a_function_of_seed_and_task_alone():
    p = task_permutation(3, 2, 784)
    assert torch.equal(torch.sort(p).values, torch.arange(784))  # a permutation
    assert torch.equal(p, task_permutation(3, 2, 784))
    torch.manual_seed(99)  # the global RNG plays no part
    assert torch.equal(p, task_permutation(3, 2, 784))
    assert not torch.equal(p, task_permutation(3, 1, 784)) and not torch.equal(p, task_permutation(4, 2, 784))


def test_permuted_tasks_are_the_base_images_with_their_pixels_permuted(build_data, base):
    plain_base = build_data(base)
    seq = build_data({"use": "permuted-tasks", "tasks": 3, "seed": 5, "identity_first": True, "base": base})
    again = build_data({"use": "permuted-tasks", "tasks": 3, "seed": 5, "identity_first": True, "base": base})
    x0, y0 = plain_base.tensors("test")
    assert seq.info.num_tasks == 3 and seq.info.num_classes == 10
    tx, ty = images(seq, 0)
    assert torch.equal(tx, x0) and torch.equal(ty, y0)  # identity permutation: the base data
    perm = task_permutation(5, 2, 28 * 28)
    tx, ty = images(seq, 2)
    assert torch.equal(tx.flatten(1), x0.flatten(1)[:, perm]) and torch.equal(ty, y0)
    assert torch.equal(images(again, 2, "train")[0], images(seq, 2, "train")[0])  # rebuilt: the same tasks
    plain = build_data({"use": "permuted-tasks", "tasks": 2, "seed": 5, "base": base})
    assert not torch.equal(images(plain, 0)[0], x0)  # without identity_first task 0 is permuted too


def test_rotated_task_zero_is_the_base_and_a_quarter_turn_is_rot90(build_data, base):
    plain_base = build_data(base)
    seq = build_data({"use": "rotated-tasks", "tasks": 4, "base": base})  # 0, 90, 180, 270 degrees
    x0, _ = plain_base.tensors("test")
    assert torch.equal(images(seq, 0)[0], x0)
    quarter = images(seq, 1)[0]
    turned = [torch.rot90(x0, k, dims=(2, 3)) for k in (1, -1)]
    errors = [float((quarter - t).abs().max()) for t in turned]
    assert min(errors) < 1e-5 and max(errors) > 0.1  # exactly one of the two quarter turns
    assert float((images(seq, 2)[0] - torch.rot90(x0, 2, dims=(2, 3))).abs().max()) < 1e-5


def test_split_tasks_hold_disjoint_classes_relabelled_from_zero(build_data, base):
    larger = {**base, "subset": 200}
    seq = build_data({"use": "split-tasks", "tasks": 5, "classes_per_task": 2, "base": larger})
    _, y = build_data(larger).tensors("train")
    assert seq.info.num_classes == 2 and seq.info.num_tasks == 5
    for t in range(5):
        tx, ty = images(seq, t, "train")
        assert set(ty.tolist()) <= {0, 1}
        assert len(ty) == int(((y == 2 * t) | (y == 2 * t + 1)).sum())
        assert int((ty == 1).sum()) == int((y == 2 * t + 1).sum())
    shuffled = build_data({"use": "split-tasks", "tasks": 5, "order": "random", "seed": 1,
                           "base": larger})
    sizes = sorted(len(shuffled.task(t).train) for t in range(5))
    assert sum(sizes) == 200


def test_too_many_split_tasks_fail_validation_with_the_key_path(host):
    from deepscope import parse_pipeline
    from deepscope import ConfigError

    text = ('[run]\nname = "x"\nseed = 0\n[data]\nuse = "split-tasks"\ntasks = 6\nclasses_per_task = 2\n'
            'base = { use = "fashion-mnist-sample" }\n[model]\nuse = "supermask-mlp"\n')
    with pytest.raises(ConfigError) as err:
        parse_pipeline(text, host.registry)
    assert "$.data.tasks" in str(err.value) and "12 classes" in str(err.value)
