"""The prototype-grid probe: MTT's display (clip the set at mean +- 2.5 std, then scale each image),
class rows in the set's order, and the artifacts of a tracked run."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

from deepscope.testing import fresh_store, run_toml
from deepscope_galaxy.prototypes import class_rows, display, grid_image

from galaxy_testkit import CLASSES, host, pipeline


def test_display_clips_the_set_at_k_sigma_then_scales_each_image_to_0_1():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 5, 5)
    x[0, 0, 0, 0] = 50.0  # an outlier the clipping removes
    shown = display(x, 2.5)
    mean, std = x.mean(), x.std()
    clipped = x.clamp(mean - 2.5 * std, mean + 2.5 * std)
    for i in range(4):
        expected = (clipped[i] - clipped[i].min()) / (clipped[i].max() - clipped[i].min())
        torch.testing.assert_close(shown[i], expected)
    assert shown.amin(dim=(1, 2, 3)).tolist() == [0.0] * 4 and shown.amax(dim=(1, 2, 3)).tolist() == [1.0] * 4
    torch.testing.assert_close(display(x, None), x.clamp(0, 1))


def test_rows_hold_the_first_images_of_each_class_in_order():
    labels = torch.tensor([2, 0, 1, 0, 2, 0])
    assert class_rows(labels, 3, per_class=2) == [[1, 3], [2], [0, 4]]
    images = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 2, 2)
    grid = grid_image(images, [[1, 3], [2]], pad=1)
    assert grid.shape == (1, 7, 7)
    assert grid[0, 1, 1] == 1 and grid[0, 1, 4] == 3 and grid[0, 4, 1] == 2 and grid[0, 4, 4] == 1.0  # white gap


def test_a_tracked_run_logs_the_grid_and_one_image_per_class(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSCOPE_CACHE", str(tmp_path / "cache"))
    probe = '\n[[stage]]\ndo = "probe"\nuse = "prototype-grid"\nname = "protos"\n'
    uri = fresh_store(tmp_path / "store")
    result = run_toml(pipeline(iterations=2, extra_stages=probe), host(), tracking_uri=uri)
    assert result.metrics["probe/protos/images"] == 2 * CLASSES
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("deepscope").experiment_id])

    def walk(path=None):
        for f in client.list_artifacts(run.info.run_id, path):
            yield from (walk(f.path) if f.is_dir else [f.path])

    files = set(walk())
    assert {"probe/protos/prototypes.png", *{f"probe/protos/prototypes/class_{k}.png" for k in range(CLASSES)}} <= files
