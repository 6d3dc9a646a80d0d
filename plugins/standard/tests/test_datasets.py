"""Datasets: the embedded sample, the readers and layouts, subsets, classes, padding, augmentation, errors.

Oracles: IDX files written here by the published format and read back
independently (and by torchvision's own IDX reader), brute force over every
crop/flip, label histograms, exact stats. Every reader runs on small files the
tests generate in the real on-disk formats; only the checks against the real
full Fashion-MNIST need it installed, and they skip (saying how) without it.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import runpy
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import deepscope_standard
from deepscope_standard import datasets as ds
from deepscope_standard.datasets_config import FullDataConfig, MnistLikeConfig, SampleConfig
from deepscope import ConfigError, DataError, structure_component
from deepscope.testing import make_host

CHECKOUT = Path(__file__).resolve().parents[3]


def real_fashion_mnist_places() -> list[Path]:
    """Where a user keeps the full Fashion-MNIST: $DEEPSCOPE_DATA, the Debian package, ../shared/data."""
    bases = []
    if os.environ.get("DEEPSCOPE_DATA"):
        env = Path(os.environ["DEEPSCOPE_DATA"]).expanduser()
        bases += [env / "fashion-mnist", env]
    bases += [Path("/usr/share/datasets/fashion-mnist"), CHECKOUT.parent / "shared" / "data" / "fashion-mnist"]
    return [d for base in bases for d in (base, base / "FashionMNIST" / "raw")]


# read once at import, before the autouse fixture below hides DEEPSCOPE_DATA from the tests
FMNIST_PLACES = real_fashion_mnist_places()
FMNIST = next((d for d in FMNIST_PLACES if ds.has_idx_files(d)), None)
needs_real_fashion_mnist = pytest.mark.skipif(
    FMNIST is None, reason="needs the full Fashion-MNIST (the four IDX files): install the Debian package "
    "dataset-fashion-mnist, or put the files from https://github.com/zalandoresearch/fashion-mnist in "
    "$DEEPSCOPE_DATA/fashion-mnist and export DEEPSCOPE_DATA; looked in "
    + ", ".join(str(d) for d in FMNIST_PLACES))


@pytest.fixture(scope="module")
def registry():
    return make_host(deepscope_standard).registry


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch, tmp_path):
    """Tests never see the user's DEEPSCOPE_DATA or a system-wide Fashion-MNIST copy."""
    monkeypatch.delenv("DEEPSCOPE_DATA", raising=False)
    monkeypatch.setattr(ds, "SYSTEM_FASHION_MNIST", tmp_path / "no-system-copy")


def exact_stats(pixels: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of integer pixels / 255 in exact rational arithmetic."""
    means, stds = [], []
    for c in range(pixels.shape[1]):
        values = pixels[:, c].long()
        n, s1, s2 = values.numel(), int(values.sum()), int(values.square().sum())
        mean = Fraction(s1, 255 * n)
        means.append(float(mean))
        stds.append(math.sqrt(Fraction(s2, 255 * 255 * n) - mean ** 2))
    return means, stds


def raw_idx(path: Path) -> np.ndarray:
    """Independent IDX decoding for the oracle: magic, big-endian dims, then bytes."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = tuple(int(np.frombuffer(data[4 + 4 * i:8 + 4 * i], dtype=">u4")[0]) for i in range(ndim))
    return np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


@pytest.fixture(scope="module")
def fmnist_test_split():
    return (raw_idx(ds.idx_file(FMNIST, "t10k-images-idx3-ubyte")),
            raw_idx(ds.idx_file(FMNIST, "t10k-labels-idx1-ubyte")))


# --------------------------------------------------------------------------- the embedded sample


def test_sample_shapes_range_and_balance(registry):
    bundle = registry.get("dataset", "fashion-mnist-sample").build(SampleConfig())
    assert isinstance(bundle.train, TensorDataset) and isinstance(bundle.test, TensorDataset)
    (x, y), (xt, yt) = bundle.train.tensors, bundle.test.tensors
    assert x.shape == (5000, 1, 28, 28) and xt.shape == (1000, 1, 28, 28)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() == 0 and x.max() == 1 and xt.min() == 0 and xt.max() == 1
    assert torch.bincount(y, minlength=10).tolist() == [500] * 10
    assert torch.bincount(yt, minlength=10).tolist() == [100] * 10
    info = bundle.info
    assert (info.name, info.num_classes, info.input_shape) == ("fashion-mnist-sample", 10, (1, 28, 28))
    assert info.class_names[0] == "T-shirt/top" and info.class_names[9] == "Ankle boot"
    mean, std = exact_stats((x * 255).round().long())
    assert info.mean[0] == pytest.approx(mean[0], rel=1e-14) and info.std[0] == pytest.approx(std[0], rel=1e-14)


@needs_real_fashion_mnist
def test_sample_is_the_first_images_of_each_class(fmnist_test_split):
    images, labels = fmnist_test_split
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:100] for c in range(10)]))
    bundle = ds.load_fashion_mnist_sample(SampleConfig())
    x, y = bundle.test.tensors
    assert torch.equal(y, torch.from_numpy(labels[keep].astype(np.int64)))
    assert torch.equal((x[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(images[keep].copy()))


# --------------------------------------------------------------------------- full Fashion-MNIST


@needs_real_fashion_mnist
def test_flat_layout_reads_the_real_files(registry):
    bundle = registry.get("dataset", "fashion-mnist").build(MnistLikeConfig(root=str(FMNIST)))
    (x, y), (xt, yt) = bundle.train.tensors, bundle.test.tensors
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert torch.bincount(y, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(yt, minlength=10).tolist() == [1000] * 10
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert bundle.info.input_shape == (1, 28, 28) and bundle.info.num_classes == 10


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an IDX file (gzip) by the published format: 0, 0, 0x08, ndim, big-endian dims, bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def small_idx_set(directory: Path, n_train: int = 12, n_test: int = 5, seed: int = 0) -> None:
    """Four tiny IDX files with the standard names (the layout logic does not depend on size)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_idx_reader_matches_torchvision_on_written_files(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    rng = np.random.default_rng(4)
    images, labels = rng.integers(0, 256, (7, 28, 28)), rng.integers(0, 10, 7)
    write_idx(tmp_path / "images.gz", images)
    write_idx(tmp_path / "labels.gz", labels)
    for stem in ("images", "labels"):
        (tmp_path / stem).write_bytes(gzip.open(tmp_path / f"{stem}.gz").read())
    theirs = read_image_file(str(tmp_path / "images")).numpy()
    assert np.array_equal(theirs, images)  # the writer follows the format torchvision reads
    for path in (tmp_path / "images.gz", tmp_path / "images"):
        ours = ds.read_idx(path)
        assert ours.dtype == np.uint8 and np.array_equal(ours, theirs) and np.array_equal(ours, raw_idx(path))
    assert np.array_equal(ds.read_idx(tmp_path / "labels.gz"), read_label_file(str(tmp_path / "labels")).numpy())
    assert np.array_equal(ds.read_idx(tmp_path / "labels"), labels)


@needs_real_fashion_mnist
def test_idx_reader_matches_torchvision_on_the_real_files(tmp_path):
    from torchvision.datasets.mnist import read_image_file

    source = ds.idx_file(FMNIST, "t10k-images-idx3-ubyte")
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rb") as src, open(tmp_path / "images", "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert np.array_equal(ds.read_idx(source), read_image_file(str(tmp_path / "images")).numpy())


def test_truncated_or_foreign_idx_file_is_a_data_error(tmp_path):
    write_idx(tmp_path / "labels.gz", np.arange(20) % 10)
    (tmp_path / "cut").write_bytes(gzip.open(tmp_path / "labels.gz").read()[:-5])
    with pytest.raises(DataError, match="truncated"):
        ds.read_idx(tmp_path / "cut")
    (tmp_path / "foreign").write_bytes(b"PK\x03\x04 not an IDX file")
    with pytest.raises(DataError, match="not an IDX file"):
        ds.read_idx(tmp_path / "foreign")


@pytest.mark.parametrize("layout", ["name-flat", "name-torchvision", "torchvision"])
def test_deepscope_data_layouts(monkeypatch, tmp_path, layout):
    home = tmp_path / "data"
    target = {"name-flat": home / "fashion-mnist", "name-torchvision": home / "fashion-mnist" / "FashionMNIST" / "raw",
              "torchvision": home / "FashionMNIST" / "raw"}[layout]
    small_idx_set(target)
    monkeypatch.setenv("DEEPSCOPE_DATA", str(home))
    bundle = ds.load_fashion_mnist(MnistLikeConfig())
    assert len(bundle.train) == 12 and len(bundle.test) == 5
    assert bundle.test.tensors[1].tolist() == [0, 1, 2, 3, 4]


def test_uncompressed_files_are_read_too(tmp_path):
    small_idx_set(tmp_path / "gz")
    (tmp_path / "raw").mkdir()
    for f in (tmp_path / "gz").iterdir():
        (tmp_path / "raw" / f.name[:-3]).write_bytes(gzip.open(f).read())
    a = ds.load_mnist(MnistLikeConfig(root=str(tmp_path / "gz")))
    b = ds.load_mnist(MnistLikeConfig(root=str(tmp_path / "raw")))
    assert torch.equal(a.train.tensors[0], b.train.tensors[0]) and a.info.class_names[3] == "3"


def test_system_copy_is_found_without_root_or_env(monkeypatch, tmp_path):
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    small_idx_set(system)
    monkeypatch.setattr(ds, "SYSTEM_FASHION_MNIST", system)
    assert len(ds.load_fashion_mnist(MnistLikeConfig()).test) == 5
    with pytest.raises(DataError):  # `mnist` never reads the Fashion-MNIST system copy
        ds.load_mnist(MnistLikeConfig())
    home = tmp_path / "home"
    small_idx_set(home / "fashion-mnist", n_test=3)
    monkeypatch.setenv("DEEPSCOPE_DATA", str(home))  # the user's directory comes first
    assert len(ds.load_fashion_mnist(MnistLikeConfig()).test) == 3


def test_missing_data_names_every_place_looked(monkeypatch, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as err:
        ds.load_fashion_mnist(MnistLikeConfig(root=str(empty)))
    text = str(err.value)
    assert f"{empty} (flat IDX files)" in text and f"{empty / 'FashionMNIST' / 'raw'} (torchvision layout)" in text
    assert "download = true" in text and "dataset-fashion-mnist" in text

    monkeypatch.setenv("DEEPSCOPE_DATA", str(empty))
    for loader, places in ((ds.load_mnist, [empty / "mnist", empty / "mnist" / "MNIST" / "raw", empty]),
                           (ds.load_cifar10, [empty / "cifar10", empty]),
                           (ds.load_svhn, [empty / "svhn", empty])):
        config = MnistLikeConfig() if loader is ds.load_mnist else FullDataConfig()
        with pytest.raises(DataError) as err:
            loader(config)
        for place in places:
            assert f"  - {place} (" in str(err.value)

    monkeypatch.delenv("DEEPSCOPE_DATA")
    with pytest.raises(DataError, match=r"\$DEEPSCOPE_DATA is not set") as err:
        ds.load_cifar100(FullDataConfig())
    with pytest.raises(DataError, match="needs a `root` or the DEEPSCOPE_DATA"):
        ds.load_cifar100(FullDataConfig(download=True))  # fails before any network use


# --------------------------------------------------------------------------- CIFAR / SVHN readers


def _fake_cifar(folder: Path, files: dict[str, int], label_key: str, classes: int, seed: int = 0):
    """Batches as the python version of CIFAR stores them: protocol-2 pickles of a dict with uint8
    ``data`` (N, 3072), labels as a list, and the batch label and file names beside them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    made = {}
    for name, n in files.items():
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, size=n).tolist()
        batch = {"batch_label": f"{name} of fake", label_key: labels, "data": data,
                 "filenames": [f"img_{i}.png" for i in range(n)]}
        if label_key == "fine_labels":
            batch["coarse_labels"] = [label // 5 for label in labels]
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        made[name] = (data, labels)
    return made


def test_cifar10_reader_layout_and_uint8_storage(tmp_path):
    made = _fake_cifar(tmp_path / "cifar-10-batches-py",
                       {**{f"data_batch_{i}": 4 for i in range(1, 6)}, "test_batch": 6}, "labels", 10)
    bundle = ds.load_cifar10(FullDataConfig(root=str(tmp_path)))
    assert len(bundle.train) == 20 and len(bundle.test) == 6 and bundle.info.input_shape == (3, 32, 32)
    x, y = bundle.tensors("train")
    data, labels = made["data_batch_2"]
    # row = 1024 red, 1024 green, 1024 blue values, each row-major 32x32
    assert torch.equal((x[4:8] * 255).round().to(torch.uint8), torch.from_numpy(data.reshape(4, 3, 32, 32)))
    assert y[4:8].tolist() == labels and y.dtype == torch.int64
    all_train = np.concatenate([made[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    mean, std = exact_stats(torch.from_numpy(all_train))
    assert bundle.info.mean == pytest.approx(tuple(mean), rel=1e-14)
    assert bundle.info.std == pytest.approx(tuple(std), rel=1e-14)
    # the user may also point `root` at the batches folder itself
    again = ds.load_cifar10(FullDataConfig(root=str(tmp_path / "cifar-10-batches-py")))
    assert torch.equal(again.tensors("test")[0], bundle.tensors("test")[0])


def test_cifar100_fine_labels_and_names(tmp_path):
    folder = tmp_path / "cifar100" / "cifar-100-python"
    _fake_cifar(folder, {"train": 8, "test": 3}, "fine_labels", 100)
    names = [f"class{i}" for i in range(100)]
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": names, "coarse_label_names": [f"super{i}" for i in range(20)]}, f,
                    protocol=2)
    bundle = ds.load_cifar100(FullDataConfig(root=str(tmp_path / "cifar100")))
    assert bundle.info.num_classes == 100 and bundle.info.class_names == tuple(names) and len(bundle.train) == 8


def test_svhn_reader_maps_label_10_to_0_and_never_flips(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(1)
    for split, n in (("train", 5), ("test", 3)):
        images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        savemat(tmp_path / f"{split}_32x32.mat",
                {"X": images.transpose(2, 3, 1, 0), "y": np.array([[10], [1], [2], [10], [9]][:n], dtype=np.uint8)})
        if split == "train":
            train_images = images
    bundle = ds.load_svhn(FullDataConfig(root=str(tmp_path), augment=True))
    assert bundle.train.flip is False
    x, y = bundle.tensors("test")
    assert y.tolist() == [0, 1, 2]
    assert torch.equal((bundle.train.base[3][0] * 255).round().to(torch.uint8), torch.from_numpy(train_images[3]))


# --------------------------------------------------------------------------- subsets, padding, augmentation


def test_subset_first_and_balanced():
    full = ds.load_fashion_mnist_sample(SampleConfig())
    y_full = full.train.tensors[1]
    first = ds.load_fashion_mnist_sample(SampleConfig(subset=37, test_subset=5))
    assert torch.equal(first.train.tensors[0], full.train.tensors[0][:37])
    assert len(first.test) == 5 and first.info.mean == full.info.mean  # stats come from the whole split

    balanced = ds.load_fashion_mnist_sample(SampleConfig(subset=25, subset_mode="balanced"))
    x, y = balanced.train.tensors
    assert torch.bincount(y, minlength=10).tolist() == [3] * 5 + [2] * 5
    expected, seen = [], [0] * 10  # brute force: walk the split, keep the first examples of each class
    for i, label in enumerate(y_full.tolist()):
        if seen[label] < (3 if label < 5 else 2):
            seen[label] += 1
            expected.append(i)
    assert torch.equal(x, full.train.tensors[0][expected])


def test_subset_errors():
    with pytest.raises(ConfigError, match="subset = 6000"):
        ds.load_fashion_mnist_sample(SampleConfig(subset=6000))
    with pytest.raises(ConfigError, match="needs 2 examples of class 1, but the split has only 1"):
        ds.balanced_indices(torch.tensor([0, 0, 1, 0]), 4, num_classes=2)
    with pytest.raises(ConfigError) as err:
        ds.balanced_indices(torch.tensor([0, 0, 1, 0]), 4, num_classes=2, key="test_subset")
    assert err.value.issues[0].path == "test_subset"


def test_classes_keep_and_relabel_in_the_order_given():
    full = ds.load_fashion_mnist_sample(SampleConfig())
    kept = ds.load_fashion_mnist_sample(SampleConfig(classes=[7, 3, 9]))
    assert kept.info.num_classes == 3 and kept.info.class_names == ("Sneaker", "Dress", "Ankle boot")
    for split, per_class in (("train", 500), ("test", 100)):
        x_full, y_full = getattr(full, split).tensors
        x, y = getattr(kept, split).tensors
        assert torch.bincount(y, minlength=3).tolist() == [per_class] * 3 and y.dtype == torch.int64
        # brute force: walk the split in order, keep rows of 7, 3, 9 and name them 0, 1, 2
        rows = [i for i, label in enumerate(y_full.tolist()) if label in (7, 3, 9)]
        assert torch.equal(x, x_full[rows])
        assert y.tolist() == [{7: 0, 3: 1, 9: 2}[label] for label in y_full[rows].tolist()]
    mean, std = exact_stats((kept.train.tensors[0] * 255).round().long())  # stats of the kept classes only
    assert kept.info.mean[0] == pytest.approx(mean[0], rel=1e-14) and kept.info.std[0] == pytest.approx(std[0], rel=1e-14)


def test_balanced_subset_over_the_kept_classes():
    bundle = ds.load_fashion_mnist_sample(SampleConfig(classes=[3, 7], subset=40, test_subset=11,
                                                       subset_mode="balanced"))
    assert torch.bincount(bundle.train.tensors[1], minlength=2).tolist() == [20, 20]
    assert torch.bincount(bundle.test.tensors[1], minlength=2).tolist() == [6, 5]  # the first class gets one more
    binary = ds.load_fashion_mnist_sample(SampleConfig(classes=[3, 7]))
    first = ds.load_fashion_mnist_sample(SampleConfig(classes=[3, 7], subset=40))
    assert torch.equal(first.train.tensors[0], binary.train.tensors[0][:40])  # 'first' N of the kept classes


def test_classes_apply_to_files_read_from_disk(tmp_path):
    small_idx_set(tmp_path / "idx", n_train=30, n_test=10)  # labels 0..9 repeating
    bundle = ds.load_mnist(MnistLikeConfig(root=str(tmp_path / "idx"), classes=[1, 0]))
    assert bundle.info.class_names == ("1", "0") and len(bundle.train) == 6
    assert bundle.test.tensors[1].tolist() == [1, 0]  # test rows 0 (label 0) and 1 (label 1), relabelled


def test_classes_errors_name_the_key(registry):
    for bad in ([3, 3], [-1, 2], []):
        _, issues = structure_component(registry, "dataset", {"use": "fashion-mnist-sample", "classes": bad},
                                        "$.data")
        assert [i.path for i in issues] == ["$.data.classes"], bad
    spec, issues = structure_component(registry, "dataset", {"use": "fashion-mnist-sample", "classes": [2, 10]},
                                       "$.data")
    assert issues == []
    with pytest.raises(ConfigError, match=r"\[10\] out of range; this dataset has classes 0..9") as err:
        spec.build()
    assert err.value.issues[0].path == "$.data.classes"  # the spec adds where the table sits
    with pytest.raises(ConfigError, match="lists a class twice"):
        ds.keep_classes(torch.zeros(2, 1, 1, 1), torch.tensor([0, 1]), [1, 1], num_classes=2)


def test_pad_to_32_centres_the_image():
    plain = ds.load_fashion_mnist_sample(SampleConfig(test_subset=20))
    padded = ds.load_fashion_mnist_sample(SampleConfig(test_subset=20, pad_to_32=True))
    x, xp = plain.test.tensors[0], padded.test.tensors[0]
    assert xp.shape == (20, 1, 32, 32) and padded.info.input_shape == (1, 32, 32)
    assert torch.equal(xp[:, :, 2:30, 2:30], x)
    border = xp.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.abs().sum() == 0
    assert padded.info.mean[0] == pytest.approx(plain.info.mean[0] * 28 * 28 / (32 * 32), rel=1e-12)


def _all_crops_and_flips(image: torch.Tensor, padding: int, flip: bool) -> list[torch.Tensor]:
    h, w = image.shape[-2:]
    padded = torch.zeros(image.shape[0], h + 2 * padding, w + 2 * padding)
    padded[:, padding:padding + h, padding:padding + w] = image
    out = []
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            crop = padded[:, top:top + h, left:left + w]
            out.append(crop)
            if flip:
                out.append(crop.flip(-1))
    return out


@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("batched", [False, True])
def test_augment_is_a_crop_and_flip_of_the_original(flip, batched):
    torch.manual_seed(0)
    base = ds.load_fashion_mnist_sample(SampleConfig(subset=30, pad_to_32=True)).train
    augmented = ds.RandomCropFlip(base, padding=4, flip=flip)
    indices = list(range(len(base)))[::-1]
    items = augmented.__getitems__(indices) if batched else [augmented[i] for i in indices]
    changed, flipped = 0, 0
    for i, (x, y) in zip(indices, items):
        original, label = base[i]
        assert x.shape == original.shape and int(y) == int(label)
        assert 0 <= float(x.min()) and float(x.max()) <= 1
        candidates = _all_crops_and_flips(original, 4, flip)
        assert any(torch.equal(x, c) for c in candidates)
        changed += not torch.equal(x, original)
        flipped += not any(torch.equal(x, c) for c in candidates[::2]) if flip else 0
    assert changed > 0 and (flipped > 0) == flip


def test_uint8_batches_equal_single_items():
    images = torch.randint(0, 256, (9, 3, 6, 5), dtype=torch.uint8)
    data = ds.ImageDataset(images, torch.arange(9))
    batch = data.__getitems__([4, 0, 8])
    for (x, y), i in zip(batch, [4, 0, 8]):
        assert torch.equal(x, data[i][0]) and int(y) == i and x.dtype == torch.float32
    assert torch.equal(data[4][0] * 255, images[4].float())
    torch.manual_seed(1)
    augmented = ds.RandomCropFlip(data, padding=2, flip=True)
    for (x, y), i in zip(augmented.__getitems__([4, 0, 8]), [4, 0, 8]):
        assert any(torch.equal(x, c) for c in _all_crops_and_flips(data[i][0], 2, True))


def test_augment_flip_only_uses_both_orientations():
    torch.manual_seed(0)
    image = torch.rand(1, 1, 4, 4)
    augmented = ds.RandomCropFlip(TensorDataset(image, torch.tensor([0])), padding=0, flip=True)
    seen = {bool(torch.equal(augmented[0][0], image[0])) for _ in range(40)}
    assert seen == {True, False}
    no_flip = ds.RandomCropFlip(TensorDataset(image, torch.tensor([0])), padding=0, flip=False)
    assert all(torch.equal(no_flip[0][0], image[0]) for _ in range(10))


def test_augment_flag_wraps_only_the_training_set():
    bundle = ds.load_fashion_mnist_sample(SampleConfig(augment=True, batch_size=7, num_workers=0))
    assert isinstance(bundle.train, ds.RandomCropFlip) and isinstance(bundle.test, TensorDataset)
    xb, yb = next(iter(bundle.train_loader()))
    assert xb.shape == (7, 1, 28, 28) and yb.dtype == torch.int64 and bundle.batch_size == 7


def test_channel_stats_histogram_matches_float64():
    images = torch.randint(0, 256, (50, 3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    mean, std = ds.channel_stats(images)
    exact_mean, exact_std = exact_stats(images)
    assert mean == pytest.approx(tuple(exact_mean), rel=1e-14) and std == pytest.approx(tuple(exact_std), rel=1e-14)
    mean_f, std_f = ds.channel_stats(images.float() / 255, chunk=7)
    assert mean_f == pytest.approx(mean, rel=1e-6) and std_f == pytest.approx(std, rel=1e-5)


# --------------------------------------------------------------------------- configuration


def test_registry_and_config_checks(registry):
    assert set(registry.names("dataset")) >= {"fashion-mnist-sample", "fashion-mnist", "mnist", "cifar10",
                                              "cifar100", "svhn"}
    spec, issues = structure_component(registry, "dataset", {"use": "fashion-mnist-sample", "subset": 20,
                                                             "subset_mode": "balanced"}, "$.data")
    assert issues == [] and len(spec.build().train) == 20
    _, issues = structure_component(registry, "dataset", {"use": "cifar10", "subset_mode": "random",
                                                          "batch_size": 0, "pad_to_32": True}, "$.data")
    paths = sorted(i.path for i in issues)
    assert paths == ["$.data.batch_size", "$.data.pad_to_32", "$.data.subset_mode"]


@needs_real_fashion_mnist
def test_build_script_reproduces_the_embedded_sample(tmp_path, monkeypatch):
    script = Path(deepscope_standard.__file__).resolve().parents[1] / "scripts" / "build_fashion_mnist_sample.py"
    output = tmp_path / "sample.npz"
    monkeypatch.setattr("sys.argv", [str(script), str(FMNIST), str(output)])
    runpy.run_path(str(script), run_name="__main__")
    assert output.read_bytes() == ds.SAMPLE_FILE.read_bytes()
    assert ds.SAMPLE_FILE.stat().st_size < 4_000_000


@pytest.mark.parametrize("table, expected", [
    ('use = "fashion-mnist-sample"\nsubset = 6000\n', "$.data.subset: subset = 6000 but the split has only 5000 "
     "examples"),
    ('use = "fashion-mnist-sample"\nclasses = [3, 7]\nsubset = 1001\nsubset_mode = "balanced"\n',
     "$.data.subset: subset = 1001 but the split has only 1000 examples"),  # two classes of 500 kept
    ('use = "cifar10"\ntest_subset = 20000\n', "$.data.test_subset: test_subset = 20000 but the split has only "
     "10000 examples"),
])
def test_subsets_larger_than_a_split_are_caught_before_loading(table, expected):
    """cifar10 is not on this machine: the check works from the declared counts, nothing is read."""
    from deepscope import ConfigError, parse_pipeline
    from deepscope.testing import make_host

    text = f'[run]\nname = "s"\nseed = 0\n[data]\n{table}[model]\nuse = "lenet-300-100"\n'
    with pytest.raises(ConfigError) as err:
        parse_pipeline(text, make_host(deepscope_standard).registry, file="p.toml")
    assert str(err.value) == f"p.toml: {expected}"


def test_the_declared_counts_of_the_sample_are_its_real_counts():
    from deepscope import structure_component
    from deepscope.testing import make_host

    registry = make_host(deepscope_standard).registry
    spec, issues = structure_component(registry, "dataset", {"use": "fashion-mnist-sample"}, "$.data")
    assert not issues
    shape = spec.component.data_shape(spec.config)
    bundle = spec.build()
    for split, declared in (("train", shape.train_counts), ("test", shape.test_counts)):
        labels = bundle.tensors(split)[1]
        assert tuple(int((labels == c).sum()) for c in range(10)) == declared
    assert shape.input_shape == bundle.info.input_shape and shape.num_classes == bundle.info.num_classes


def test_subset_problem_follows_the_balanced_rule_on_unbalanced_counts():
    from deepscope_standard.datasets_config import subset_problem

    assert subset_problem(6, "balanced", (3, 2, 5), "subset") is None  # 2 + 2 + 2
    assert subset_problem(7, "balanced", (3, 2, 5), "subset") is None  # the first class takes the extra one
    assert subset_problem(8, "balanced", (3, 2, 5), "subset") == (
        "a balanced subset of 8 needs 3 examples of class 1, but the split has only 2")
    assert subset_problem(8, "first", (3, 2, 5), "subset") is None
    assert subset_problem(11, "first", (3, 2, 5), "subset") == "subset = 11 but the split has only 10 examples"
