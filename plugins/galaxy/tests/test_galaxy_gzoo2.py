"""The gzoo2 loaders on small generated folders and a catalogue in the exact formats: counts, the
deterministic seeded split, crop and resize, rotations, the transpose quirk, catalogue confidences and
top-k selection, and the curated folders built into the cache once."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch
from PIL import Image

from deepscope import DataError
from deepscope_galaxy.configs import GZoo2CatalogueConfig, GZoo2Config
from deepscope_galaxy.gzoo2 import (CLASS_NAMES, class_confidences, load_gzoo2, load_gzoo2_catalogue,
                                    select_galaxies)

PER_CLASS, TEST, SIDE = 6, 2, 32


def _galaxy(c: int, i: int) -> Image.Image:
    """A 32x32 RGB image: border of colour (200, 0, 0); central half a flat grey encoding (class, index)."""
    a = np.zeros((SIDE, SIDE, 3), dtype=np.uint8)
    a[...] = (200, 0, 0)
    a[8:24, 8:24] = 10 * c + i
    return Image.fromarray(a)


@pytest.fixture
def folders(tmp_path):
    root = tmp_path / "gzoo2"
    for c in range(9):
        (root / str(c)).mkdir(parents=True)
        for i in range(PER_CLASS):
            _galaxy(c, i).save(root / str(c) / f"{1000 * c + i}.jpg", quality=100, subsampling=0)
        (root / str(c) / "notes.txt").write_text("not an image")
    return root


def _config(root, **kw):
    return GZoo2Config(root=str(root), test_per_class=TEST, size=8, **kw)


def test_counts_shapes_and_the_split_are_deterministic_and_the_official_shuffle(folders):
    bundle = load_gzoo2(_config(folders))
    assert len(bundle.train) == 9 * (PER_CLASS - TEST) and len(bundle.test) == 9 * TEST
    x, y = bundle.tensors("train")
    assert x.shape[1:] == (3, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.bincount(y).tolist() == [PER_CLASS - TEST] * 9
    assert bundle.info.mean == (0.0635, 0.0561, 0.0446) and bundle.info.class_names == CLASS_NAMES
    # the split: one RandomState(1) over the classes in order, each a shuffle of the sorted JPEG names
    rng = np.random.RandomState(1)
    expected_test = []
    for c in range(9):
        names = sorted(f for f in os.listdir(folders / str(c)) if f.endswith(".jpg"))
        rng.shuffle(names)
        expected_test += [int(n[:-4]) % 1000 + 10 * c for n in names[:TEST]]
    xt, _ = bundle.tensors("test")
    grey = (xt[:, 0] * 255).round().flatten(1).median(1).values  # the crop is the flat central square
    assert grey.tolist() == pytest.approx(expected_test, abs=2)
    again = load_gzoo2(_config(folders))
    assert torch.equal(again.tensors("test")[0], xt)


def test_the_central_half_crop_removes_the_border(folders):
    x, _ = load_gzoo2(_config(folders)).tensors("test")
    spread = (x * 255).flatten(2)
    assert (spread.max(2).values - spread.min(2).values).max() <= 3  # no red border left: every channel flat


def test_rotations_multiply_the_training_set_and_copy_0_is_the_unrotated_image(tmp_path, folders):
    plain = load_gzoo2(_config(folders)).tensors("train")[0]
    rotated, labels = load_gzoo2(_config(folders, rotations=4)).tensors("train")
    assert len(rotated) == 4 * len(plain) and torch.bincount(labels).tolist() == [4 * (PER_CLASS - TEST)] * 9
    assert torch.equal(rotated[::4], plain)
    assert len(load_gzoo2(_config(folders, rotations=4)).test) == 9 * TEST  # test images are never rotated


def test_the_transpose_quirk_swaps_height_and_width(tmp_path):
    root = tmp_path / "g"
    a = np.zeros((32, 32, 3), dtype=np.uint8)
    a[8:16, 8:24] = 255  # a wide bar in the top half of the central crop
    for c in range(9):
        (root / str(c)).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(a).save(root / str(c) / f"{i}.jpg", quality=100)
    x = load_gzoo2(GZoo2Config(root=str(root), test_per_class=1, size=16)).tensors("test")[0][0]
    q = load_gzoo2(GZoo2Config(root=str(root), test_per_class=1, size=16, transpose_quirk=True)).tensors("test")[0][0]
    torch.testing.assert_close(q, x.transpose(1, 2))
    assert x[:, :8].mean() > 0.9 and x[:, 8:].mean() < 0.1  # without the quirk the bar stays on top


def test_a_missing_folder_is_a_data_error_that_says_where_to_get_the_data(tmp_path):
    with pytest.raises(DataError) as err:
        load_gzoo2(GZoo2Config(root=str(tmp_path / "nowhere")))
    assert "gzoo2-catalogue" in str(err.value) and "HaowenGuan" in str(err.value)


COLUMNS = ["t01_smooth_or_features_a01_smooth", "t01_smooth_or_features_a02_features_or_disk",
           "t01_smooth_or_features_a03_star_or_artifact", "t02_edgeon_a04_yes", "t02_edgeon_a05_no",
           "t03_bar_a06_bar", "t03_bar_a07_no_bar", "t04_spiral_a08_spiral", "t04_spiral_a09_no_spiral",
           "t07_rounded_a16_completely_round", "t07_rounded_a17_in_between", "t07_rounded_a18_cigar_shaped",
           "t09_bulge_shape_a25_rounded", "t09_bulge_shape_a26_boxy", "t09_bulge_shape_a27_no_bulge"]


#: the answer each class leans to in t01, t02, t03, t04, t07, t09 (None: random)
PATHS = [(0, None, None, None, 0, None), (0, None, None, None, 1, None), (0, None, None, None, 2, None),
         (1, 0, None, None, None, 0), (1, 0, None, None, None, 2), (1, 1, 0, 0, None, None),
         (1, 1, 0, 1, None, None), (1, 1, 1, 0, None, None), (1, 1, 1, 1, None, None),
         (2, None, None, None, None, None)]


def _row(rng, lean=None):
    """Random vote fractions that sum to 1 within each question, leaning towards class ``lean``'s path."""
    out = []
    for q, k in enumerate((3, 2, 2, 2, 3, 3)):
        v = rng.dirichlet(np.ones(k))
        if lean is not None and PATHS[lean][q] is not None:
            v = 0.4 * v + 0.6 * np.eye(k)[PATHS[lean][q]]
        out += list(v)
    return dict(zip(COLUMNS, out))


def test_class_confidences_are_products_down_the_tree():
    row = {f"{c}_fraction": 0.0 for c in COLUMNS}
    row.update({"t01_smooth_or_features_a02_features_or_disk_fraction": 0.8, "t02_edgeon_a05_no_fraction": 0.5,
                "t03_bar_a06_bar_fraction": 0.25, "t04_spiral_a09_no_spiral_fraction": 0.5,
                "t01_smooth_or_features_a01_smooth_fraction": 0.2, "t07_rounded_a18_cigar_shaped_fraction": 1.0})
    conf = class_confidences(row)
    assert conf[6] == pytest.approx(0.8 * 0.5 * 0.25 * 0.5) and conf[2] == pytest.approx(0.2)
    rng = np.random.default_rng(1)
    for _ in range(20):  # with every question's fractions summing to 1, the ten confidences sum to 1
        row = {f"{k}_fraction": v for k, v in _row(rng).items()}
        assert sum(class_confidences(row)) == pytest.approx(1.0, abs=1e-12)


@pytest.fixture
def catalogue(tmp_path):
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(400):
        row = {"dr7objid": str(587722981736120000 + i), **{f"{k}_fraction": f"{v:.3f}" for k, v in _row(rng, i % 10).items()}}
        rows.append(row)
        if i % 7:  # some galaxies have no cut-out
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(images / f"{row['dr7objid']}.jpg")
    path = tmp_path / "zoo2MainSpecz.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path, images, rows


def _brute_force_top(rows, images, per_class):
    by_class = {c: [] for c in range(9)}
    for row in rows:
        conf = class_confidences(row)
        best = max(range(10), key=lambda k: (conf[k], -k))
        if best < 9 and (images / f"{row['dr7objid']}.jpg").exists():
            by_class[best].append((-conf[best], row["dr7objid"]))
    return [[ident for _, ident in sorted(v)[:per_class]] for c, v in sorted(by_class.items())]


def test_selection_keeps_the_most_confident_galaxies_with_an_image(catalogue):
    path, images, rows = catalogue
    chosen = select_galaxies(path, images, per_class=3)
    assert chosen == _brute_force_top(rows, images, 3)
    with pytest.raises(DataError) as err:
        select_galaxies(path, images, per_class=1000)
    assert "per_class" in str(err.value)


def test_the_catalogue_loader_builds_the_folders_once_into_the_cache(catalogue, tmp_path, monkeypatch):
    path, images, rows = catalogue
    monkeypatch.setenv("DEEPSCOPE_CACHE", str(tmp_path / "cache"))
    config = GZoo2CatalogueConfig(catalogue=str(path), images=str(images), per_class=3, test_per_class=1, size=8)
    bundle = load_gzoo2_catalogue(config)
    assert len(bundle.train) == 18 and len(bundle.test) == 9 and bundle.info.name == "gzoo2-catalogue"
    (entry,) = [p for p in (tmp_path / "cache" / "gzoo2-curated").iterdir() if p.is_dir()]
    top = _brute_force_top(rows, images, 3)
    assert [sorted(f.name for f in (entry / str(c)).iterdir()) for c in range(9)] == [
        sorted(f"{i}.jpg" for i in ids) for ids in top]
    stamp = (entry / "0").stat().st_mtime_ns
    again = load_gzoo2_catalogue(config)
    assert (entry / "0").stat().st_mtime_ns == stamp and torch.equal(again.tensors("train")[0],
                                                                      bundle.tensors("train")[0])
