"""Standard datasets: the embedded Fashion-MNIST sample and the usual full sets.

Everything ends as a :class:`deepscope.DataBundle` of inputs in [0, 1] and
int64 labels. The 28x28 sets become float32 ``TensorDataset``s (fast, and
``DataBundle.tensors`` slices them without a loader); the 32x32 RGB sets keep
uint8 storage (a quarter of the memory) and convert per item. The files are
read by small readers here (IDX, CIFAR pickles, SVHN .mat): fast, and no
checksum pass over the whole archive. torchvision is used only by
``download = true``, the one use of the network.
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from deepscope import ConfigError, DataBundle, DataError, DatasetInfo

# the rule is written once, torch-free, so validate checks it before loading anything
from .datasets_config import subset_problem

SAMPLE_FILE = Path(__file__).resolve().parent / "data" / "fashion_mnist_sample.npz"
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "DEEPSCOPE_DATA"

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
DIGIT_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# --------------------------------------------------------------------------- IDX files


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format; gzip or raw) as an array of unsigned bytes."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims}, found {len(raw) - offset} bytes of data")
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=offset).reshape(dims)


def idx_file(directory: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` in ``directory`` (the uncompressed one first: it reads faster)."""
    for name in (stem, stem + ".gz"):
        path = directory / name
        if path.is_file():
            return path
    return None


def has_idx_files(directory: Path) -> bool:
    return all(idx_file(directory, stem) is not None for pair in IDX_FILES.values() for stem in pair)


def read_idx_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_stem, labels_stem = IDX_FILES[split]
    images = read_idx(idx_file(directory, images_stem))
    labels = read_idx(idx_file(directory, labels_stem))
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{directory}: {images.shape[0]} {split} images but {labels.shape[0]} labels")
    return images, labels


# --------------------------------------------------------------------------- datasets


class ImageDataset(Dataset):
    """uint8 images (N, C, H, W) served as float32 in [0, 1]; labels int64.

    ``__getitems__`` lets the DataLoader fetch a whole batch with one indexing
    operation instead of one Python call per image.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index):
        return self.images[index].float().div_(255), self.labels[index]

    def __getitems__(self, indices):
        return list(zip(*self.batch(indices)))

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.images[index].float().div_(255), self.labels[index]


def fetch_batch(dataset: Dataset, indices) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked (x, y) for ``indices``, by direct indexing where the dataset allows it."""
    if isinstance(dataset, TensorDataset):
        index = torch.as_tensor(indices, dtype=torch.long)
        return dataset.tensors[0][index], dataset.tensors[1][index]
    if isinstance(dataset, ImageDataset):
        return dataset.batch(indices)
    items = [dataset[i] for i in indices]
    return torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool) -> torch.Tensor:
    """Per image: zero-pad by ``padding``, crop a random window of the original size, flip half of them.

    Two ``gather`` calls (rows, then columns) do the whole batch at once.
    """
    n, c, h, w = x.shape
    rows = torch.arange(h).expand(n, h)
    cols = torch.arange(w).expand(n, w)
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
        rows = rows + torch.randint(0, 2 * padding + 1, (n, 1))
        cols = cols + torch.randint(0, 2 * padding + 1, (n, 1))
    if flip:
        cols = torch.where((torch.rand(n) < 0.5)[:, None], cols.flip(1), cols)
    x = x.gather(2, rows[:, None, :, None].expand(n, c, h, x.shape[3]))
    return x.gather(3, cols[:, None, None, :].expand(n, c, h, w))


class RandomCropFlip(Dataset):
    """Train-time augmentation on tensors: zero-pad, random crop back, random horizontal flip.

    Works per batch (``__getitems__``): one gather for the whole batch.
    """

    def __init__(self, base: Dataset, padding: int = 4, flip: bool = True):
        self.base = base
        self.padding = padding
        self.flip = flip

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index):
        x, y = self.base[index]
        return random_crop_flip(x.unsqueeze(0), self.padding, self.flip)[0], y

    def __getitems__(self, indices):
        x, y = fetch_batch(self.base, indices)
        return list(zip(random_crop_flip(x, self.padding, self.flip), y))


# --------------------------------------------------------------------------- helpers


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (N, C, H, W) images, as seen in [0, 1].

    uint8 images go through an exact 256-bin histogram per channel (fast, no
    float copy of the data); float images through chunked float64 sums.
    """
    channels = images.shape[1]
    if images.dtype == torch.uint8:
        values = torch.arange(256, dtype=torch.float64) / 255.0
        means, stds = [], []
        for c in range(channels):
            counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
            total = counts.sum()
            mean = (counts * values).sum() / total
            var = (counts * (values - mean).square()).sum() / total
            means.append(float(mean))
            stds.append(float(var.sqrt()))
        return tuple(means), tuple(stds)
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        block = images[start:start + chunk].to(torch.float64)
        total += block.sum(dim=(0, 2, 3))
        total_sq += block.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def balanced_indices(labels: torch.Tensor, n: int, num_classes: int, key: str = "subset") -> torch.Tensor:
    """The first ``n // k`` examples of every class (the first ``n % k`` classes get one more), in order."""
    counts = tuple(int((labels == c).sum()) for c in range(num_classes))
    problem = subset_problem(n, "balanced", counts, key)
    if problem:
        raise ConfigError(problem, key=key)
    per_class, extra = divmod(n, num_classes)
    chosen = [torch.nonzero(labels == c).flatten()[:per_class + (1 if c < extra else 0)] for c in range(num_classes)]
    return torch.cat(chosen).sort().values


def keep_classes(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[int], num_classes: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Only the examples of ``classes``, in split order, with label ``classes[i]`` relabelled ``i``."""
    out_of_range = [c for c in classes if not 0 <= c < num_classes]
    if out_of_range:
        raise ConfigError(f"classes = {list(classes)}: {out_of_range} out of range; this dataset has classes "
                          f"0..{num_classes - 1}", key="classes")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"classes = {list(classes)} lists a class twice; give each class once", key="classes")
    relabel = torch.full((num_classes,), -1, dtype=torch.long)
    relabel[torch.as_tensor(list(classes), dtype=torch.long)] = torch.arange(len(classes))
    new_labels = relabel[labels]
    keep = torch.nonzero(new_labels >= 0).flatten()
    if keep.numel() == 0:
        raise ConfigError(f"classes = {list(classes)}: a split has no example of these classes", key="classes")
    return images[keep], new_labels[keep]


def take_subset(images: torch.Tensor, labels: torch.Tensor, n: int | None, mode: str, num_classes: int,
                key: str) -> tuple[torch.Tensor, torch.Tensor]:
    if n is None:
        return images, labels
    if n > labels.shape[0]:
        raise ConfigError(f"{key} = {n} but the split has only {labels.shape[0]} examples", key=key)
    if mode == "balanced":
        keep = balanced_indices(labels, n, num_classes, key)
        return images[keep], labels[keep]
    return images[:n], labels[:n]


def make_bundle(name: str, config, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                class_names: Sequence[str], *, flip: bool, as_float: bool) -> DataBundle:
    """Shared tail of every loader: layout, padding, subsets, statistics, augmentation.

    ``train``/``test`` are uint8 images (N, H, W) or (N, C, H, W) with integer labels.
    ``config.classes`` narrows both splits first, so statistics and subsets see only the kept classes.
    """
    num_classes = len(class_names)
    classes = getattr(config, "classes", None)
    tensors = {}
    for split, (images, labels) in (("train", train), ("test", test)):
        x = torch.from_numpy(np.ascontiguousarray(images))
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if getattr(config, "pad_to_32", False):
            pad_h, pad_w = 32 - x.shape[2], 32 - x.shape[3]
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        y = torch.from_numpy(np.asarray(labels).astype(np.int64))
        tensors[split] = keep_classes(x, y, classes, num_classes) if classes is not None else (x, y)
    if classes is not None:
        class_names, num_classes = tuple(class_names[c] for c in classes), len(classes)
    mean, std = channel_stats(tensors["train"][0])
    x_train, y_train = take_subset(*tensors["train"], config.subset, config.subset_mode, num_classes, "subset")
    x_test, y_test = take_subset(*tensors["test"], config.test_subset, config.subset_mode, num_classes,
                                 "test_subset")
    if as_float:
        train_set: Dataset = TensorDataset(x_train.float().div_(255), y_train)
        test_set: Dataset = TensorDataset(x_test.float().div_(255), y_test)
    else:
        train_set, test_set = ImageDataset(x_train, y_train), ImageDataset(x_test, y_test)
    if config.augment:
        train_set = RandomCropFlip(train_set, padding=4, flip=flip)
    preprocess = zca_preprocess(config, x_train, mean, std)
    info = DatasetInfo(name, num_classes, tuple(int(s) for s in x_train.shape[1:]), mean, std, tuple(class_names),
                       preprocess=preprocess)
    return DataBundle(train_set, test_set, info, batch_size=config.batch_size,
                      test_batch_size=config.test_batch_size, num_workers=config.num_workers)


def zca_preprocess(config, x_train: torch.Tensor, mean, std):
    """The ZCA whitening ``config.zca`` asks for, fitted on the normalized training images (None: none)."""
    method = getattr(config, "zca", "none")
    if method == "none":
        return None
    from .zca import fit_zca

    x = x_train.float() / (255.0 if not x_train.is_floating_point() else 1.0)
    x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    return fit_zca(x, method, config.zca_reg)


def search_bases(name: str, root: str | None) -> list[Path]:
    """Directories to try, in order: ``root``; else ``$DEEPSCOPE_DATA/<name>`` then ``$DEEPSCOPE_DATA``."""
    if root:
        return [Path(root).expanduser()]
    env = os.environ.get(ENV_VAR)
    if not env:
        return []
    base = Path(env).expanduser()
    return [base / name, base]


def missing_data_error(name: str, looked: list[str], root: str | None, how: str) -> DataError:
    where = "\n".join(f"  - {place}" for place in looked) or "  (nowhere)"
    if not root and not os.environ.get(ENV_VAR):
        where += f"\n  - ${ENV_VAR} is not set and no `root` was given"
    return DataError(f"dataset {name!r} was not found. Looked in:\n{where}\nHow to get it: {how} "
                     f"Then set `root = \"DIR\"` in [data], or export {ENV_VAR}=DIR "
                     f"(it is searched as $DEEPSCOPE_DATA/{name} and $DEEPSCOPE_DATA). "
                     "With internet access, `download = true` fetches it with torchvision.")


def download_target(name: str, root: str | None) -> Path:
    if root:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    if not env:
        raise DataError(f"dataset {name!r}: `download = true` needs a `root` or the {ENV_VAR} directory "
                        "to download into")
    return Path(env).expanduser() / name


# --------------------------------------------------------------------------- loaders


def load_fashion_mnist_sample(config) -> DataBundle:
    """The class-balanced Fashion-MNIST sample embedded in the package."""
    if not SAMPLE_FILE.is_file():
        raise DataError(f"the embedded sample {SAMPLE_FILE} is missing; reinstall deepscope-standard or rebuild "
                        "it with plugins/standard/scripts/build_fashion_mnist_sample.py")
    with np.load(SAMPLE_FILE) as npz:
        train = (npz["x_train"], npz["y_train"])
        test = (npz["x_test"], npz["y_test"])
    return make_bundle("fashion-mnist-sample", config, train, test, FASHION_CLASSES, flip=True, as_float=True)


def find_idx_dir(name: str, tv_folder: str, root: str | None, extra: Sequence[Path]) -> tuple[Path | None, list[str]]:
    """The first directory holding the four IDX files (flat or torchvision layout), and every place tried."""
    looked = []
    bases = search_bases(name, root) + ([] if root else list(extra))
    for base in bases:
        for directory, layout in ((base, "flat IDX files"), (base / tv_folder / "raw", "torchvision layout")):
            looked.append(f"{directory} ({layout})")
            if has_idx_files(directory):
                return directory, looked
    return None, looked


def load_mnist_like(name: str, config, tv_folder: str, class_names: Sequence[str], download: Callable[[Path], None],
                    how: str, extra: Sequence[Path] = (), flip: bool = True) -> DataBundle:
    directory, looked = find_idx_dir(name, tv_folder, config.root, extra)
    if directory is None and config.download:
        target = download_target(name, config.root)
        download(target)
        directory = target / tv_folder / "raw"
    if directory is None:
        raise missing_data_error(name, looked, config.root, how)
    train = read_idx_split(directory, "train")
    test = read_idx_split(directory, "test")
    return make_bundle(name, config, train, test, class_names, flip=flip, as_float=True)


def _torchvision_download(cls_name: str, **kwargs) -> Callable[[Path], None]:
    def download(target: Path) -> None:
        import torchvision.datasets as tvd

        target.mkdir(parents=True, exist_ok=True)
        cls = getattr(tvd, cls_name)
        for split_kwargs in kwargs.get("splits", ({"train": True}, {"train": False})):
            cls(str(target), download=True, **split_kwargs)

    return download


def load_fashion_mnist(config) -> DataBundle:
    """Fashion-MNIST 60k/10k: flat IDX files, torchvision's layout, or the Debian package's copy."""
    return load_mnist_like(
        "fashion-mnist", config, "FashionMNIST", FASHION_CLASSES, _torchvision_download("FashionMNIST"),
        "install the Debian package `dataset-fashion-mnist` (found automatically in "
        f"{SYSTEM_FASHION_MNIST}), or copy the four IDX files (train-images-idx3-ubyte.gz, ...) from "
        "https://github.com/zalandoresearch/fashion-mnist into a directory.",
        extra=(SYSTEM_FASHION_MNIST,), flip=True)


def load_mnist(config) -> DataBundle:
    """MNIST 60k/10k: flat IDX files or torchvision's layout. Augmentation never flips digits."""
    return load_mnist_like(
        "mnist", config, "MNIST", DIGIT_CLASSES, _torchvision_download("MNIST"),
        "copy the four MNIST IDX files (train-images-idx3-ubyte.gz, ...) into a directory, or run "
        "torchvision.datasets.MNIST(DIR, download=True) on a machine with internet.", flip=False)


def _find_marker(name: str, root: str | None, marker: Sequence[str]) -> tuple[Path | None, list[str]]:
    """A base directory containing every path in ``marker`` (torchvision's layout)."""
    looked = []
    for base in search_bases(name, root):
        candidates = [base]
        if base.name == marker[0]:  # the user pointed at the dataset folder itself
            candidates.append(base.parent)
        for candidate in candidates:
            looked.append(f"{candidate} (torchvision layout: {', '.join(marker)})")
            if all((candidate / m).exists() for m in marker):
                return candidate, looked
    return None, looked


def _locate(name: str, config, cls_name: str, marker: Sequence[str], how: str,
            split_kwargs: tuple[dict, dict]) -> Path:
    base, looked = _find_marker(name, config.root, marker)
    if base is None and config.download:
        base = download_target(name, config.root)
        _torchvision_download(cls_name, splits=split_kwargs)(base)
    if base is None:
        raise missing_data_error(name, looked, config.root, how)
    return base


def read_cifar_batches(folder: Path, files: Sequence[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR's pickled batches (the python version) as uint8 (N, 3, 32, 32) images and labels."""
    images, labels = [], []
    for file in files:
        path = folder / file
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        except (OSError, KeyError, ValueError, pickle.UnpicklingError, EOFError) as exc:
            raise DataError(f"{path} is not a readable CIFAR batch ({type(exc).__name__}: {exc})") from exc
    return np.concatenate(images), np.concatenate(labels)


def _cifar_names(folder: Path, meta: str, key: str) -> tuple[str, ...]:
    try:
        with open(folder / meta, "rb") as f:
            return tuple(pickle.load(f, encoding="latin1")[key])
    except (OSError, KeyError, pickle.UnpicklingError, EOFError) as exc:
        raise DataError(f"{folder / meta} is not a readable CIFAR meta file ({exc})") from exc


CIFAR_HOW = ("download {archive} from https://www.cs.toronto.edu/~kriz/cifar.html and extract it "
             "(it makes {folder}/).")


def load_cifar10(config) -> DataBundle:
    """CIFAR-10 in torchvision's layout (``cifar-10-batches-py``)."""
    folder_name = "cifar-10-batches-py"
    how = CIFAR_HOW.format(archive="cifar-10-python.tar.gz", folder=folder_name)
    base = _locate("cifar10", config, "CIFAR10", (folder_name,), how, ({"train": True}, {"train": False}))
    folder = base / folder_name
    train = read_cifar_batches(folder, [f"data_batch_{i}" for i in range(1, 6)], "labels")
    test = read_cifar_batches(folder, ["test_batch"], "labels")
    return make_bundle("cifar10", config, train, test, CIFAR10_CLASSES, flip=True, as_float=False)


def load_cifar100(config) -> DataBundle:
    """CIFAR-100 (fine labels) in torchvision's layout (``cifar-100-python``)."""
    folder_name = "cifar-100-python"
    how = CIFAR_HOW.format(archive="cifar-100-python.tar.gz", folder=folder_name)
    base = _locate("cifar100", config, "CIFAR100", (folder_name,), how, ({"train": True}, {"train": False}))
    folder = base / folder_name
    train = read_cifar_batches(folder, ["train"], "fine_labels")
    test = read_cifar_batches(folder, ["test"], "fine_labels")
    names = _cifar_names(folder, "meta", "fine_label_names")
    return make_bundle("cifar100", config, train, test, names, flip=True, as_float=False)


def read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An SVHN ``*_32x32.mat`` file as uint8 (N, 3, 32, 32) images and labels 0-9 (the file says 10 for 0)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
        images = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 2, 0, 1))
        labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path} is not a readable SVHN .mat file ({type(exc).__name__}: {exc})") from exc
    return images, labels


def load_svhn(config) -> DataBundle:
    """SVHN (train and test, no extra) in torchvision's layout; augmentation never flips."""
    files = ("train_32x32.mat", "test_32x32.mat")
    how = "download train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ into one directory."
    base = _locate("svhn", config, "SVHN", files, how, ({"split": "train"}, {"split": "test"}))
    train, test = read_svhn(base / files[0]), read_svhn(base / files[1])
    return make_bundle("svhn", config, train, test, DIGIT_CLASSES, flip=False, as_float=False)
