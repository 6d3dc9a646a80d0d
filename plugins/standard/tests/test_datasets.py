"""Datasets: the embedded sample, the readers and layouts, subsets, padding, augmentation, errors.

Oracles: the original IDX files read here independently (and torchvision's own
IDX reader), brute force over every crop/flip, label histograms, float64 stats.
"""

from __future__ import annotations

import gzip
import math
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
from deepscope import ConfigError, DataError
from deepscope.config import structure_component
from deepscope.testing import make_host

# the real Fashion-MNIST files beside the checkout (../shared/data, as in development and CI)
FMNIST = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "fashion-mnist"


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
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = tuple(int(np.frombuffer(data[4 + 4 * i:8 + 4 * i], dtype=">u4")[0]) for i in range(ndim))
    return np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


@pytest.fixture(scope="module")
def fmnist_test_split():
    return raw_idx(FMNIST / "t10k-images-idx3-ubyte.gz"), raw_idx(FMNIST / "t10k-labels-idx1-ubyte.gz")


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


def test_sample_is_the_first_images_of_each_class(fmnist_test_split):
    images, labels = fmnist_test_split
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:100] for c in range(10)]))
    bundle = ds.load_fashion_mnist_sample(SampleConfig())
    x, y = bundle.test.tensors
    assert torch.equal(y, torch.from_numpy(labels[keep].astype(np.int64)))
    assert torch.equal((x[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(images[keep].copy()))


# --------------------------------------------------------------------------- full Fashion-MNIST


def test_flat_layout_reads_the_real_files(registry):
    bundle = registry.get("dataset", "fashion-mnist").build(MnistLikeConfig(root=str(FMNIST)))
    (x, y), (xt, yt) = bundle.train.tensors, bundle.test.tensors
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert torch.bincount(y, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(yt, minlength=10).tolist() == [1000] * 10
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert bundle.info.input_shape == (1, 28, 28) and bundle.info.num_classes == 10


def test_idx_reader_matches_torchvision(tmp_path, fmnist_test_split):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(FMNIST / f"{stem}.gz", "rb") as src, open(tmp_path / stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    ours_gz = ds.read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")
    ours_raw = ds.read_idx(tmp_path / "t10k-images-idx3-ubyte")
    theirs = read_image_file(str(tmp_path / "t10k-images-idx3-ubyte")).numpy()
    assert np.array_equal(ours_gz, theirs) and np.array_equal(ours_raw, theirs)
    labels = read_label_file(str(tmp_path / "t10k-labels-idx1-ubyte")).numpy()
    assert np.array_equal(ds.read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz"), labels)


def test_truncated_idx_file_is_a_data_error(tmp_path):
    data = gzip.open(FMNIST / "t10k-labels-idx1-ubyte.gz").read()
    (tmp_path / "cut").write_bytes(data[:-5])
    with pytest.raises(DataError, match="truncated"):
        ds.read_idx(tmp_path / "cut")


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
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    made = {}
    for name, n in files.items():
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, size=n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, label_key: labels}, f)
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
        pickle.dump({"fine_label_names": names}, f)
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


def test_build_script_reproduces_the_embedded_sample(tmp_path, monkeypatch):
    script = Path(deepscope_standard.__file__).resolve().parents[1] / "scripts" / "build_fashion_mnist_sample.py"
    output = tmp_path / "sample.npz"
    monkeypatch.setattr("sys.argv", [str(script), str(FMNIST), str(output)])
    runpy.run_path(str(script), run_name="__main__")
    assert output.read_bytes() == ds.SAMPLE_FILE.read_bytes()
    assert ds.SAMPLE_FILE.stat().st_size < 4_000_000
