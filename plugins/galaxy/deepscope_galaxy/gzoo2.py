"""The curated Galaxy Zoo 2 set of Guan et al. (``gzoo2``), and its construction from the catalogue
(``gzoo2-catalogue``).

The authors' folders are ``<root>/<class 0..8>/<dr7objid>.jpg`` (the 424 x 424 SDSS cut-outs), 600 of
the most confident galaxies per class. As their ``gzoo2_dataset.build``: per class, a shuffle seeded
once with 1 (``np.random.seed(1)``, classes in order) puts the first ``test_per_class`` (100) in the
test split and the rest (500) in training; each image is centrally half-cropped, resized to 128 x 128
with area interpolation and scaled to [0, 1]; their normalization constants become the dataset's
mean and std (the model normalizes). ``rotations = r`` adds ``r`` copies of each training image rotated
by multiples of 360 // r degrees before the crop (PIL's ``rotate``: counter-clockwise, nearest, same
size), GZoo2_aug for r = 10. Departures, for determinism: the class listing is sorted by file name
before the shuffle (``os.listdir`` order is arbitrary) and non-JPEG files are left out before it (the
official code shuffles them in and skips them after). Their ``img.T`` swaps height and width; it is
reproduced only with ``transpose_quirk``. PIL's BOX filter is the area resampling (cv2's INTER_AREA).

The catalogue (GZ2 Table 5, Willett et al. 2013, ``zoo2MainSpecz``): per galaxy the confidence of
each class is the product of the vote fractions down the decision tree (e.g. smooth x completely
round); its label is the argmax, with "star or artifact" (t01 a03) as a tenth, rejected class; each
class keeps its ``per_class`` most confident galaxies whose JPEG exists. The folders are written
into the core's cache (namespace ``gzoo2-curated``), keyed by the inputs, then loaded as ``gzoo2``.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from deepscope import DataBundle, DataError, DatasetInfo

MEAN = (0.0635, 0.0561, 0.0446)
STD = (0.1120, 0.0948, 0.0833)
CLASS_NAMES = ("smooth round", "smooth in-between", "smooth cigar", "edge-on bulge", "edge-on no bulge",
               "barred spiral", "barred no spiral", "unbarred spiral", "unbarred no spiral")
NUM_CLASSES = len(CLASS_NAMES)
HOW_TO_GET = ("The curated folders are distributed by the authors (see github.com/HaowenGuan/"
              "Galaxy-Dataset-Distillation, README 'GZoo2'); or build them with gzoo2-catalogue from the GZ2 "
              "catalogue (data.galaxyzoo.org, Table 5 'zoo2MainSpecz') and the SDSS cut-outs.")
CURATED_VERSION = 1


class UInt8Images(Dataset):
    """uint8 images (4x smaller than float) served as float pixels in [0, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i].float().div(255), self.labels[i]


# --------------------------------------------------------------------------- the curated folders

def curated_split(root: Path, test_per_class: int) -> list[tuple[list[str], list[str]]]:
    """Per class: (test files, train files), the official seeded shuffle over the sorted JPEG names."""
    rng = np.random.RandomState(1)
    out = []
    for c in range(NUM_CLASSES):
        folder = root / str(c)
        if not folder.is_dir():
            raise DataError(f"gzoo2: {folder} is missing; the curated set has one folder per class 0..8 of "
                            f"<id>.jpg images. {HOW_TO_GET}")
        files = sorted(f for f in os.listdir(folder) if f.endswith(".jpg"))
        if len(files) <= test_per_class:
            raise DataError(f"gzoo2: {folder} has {len(files)} images, not more than test_per_class = "
                            f"{test_per_class}; lower test_per_class or complete the folder")
        rng.shuffle(files)
        out.append((files[:test_per_class], files[test_per_class:]))
    return out


def preprocess(path: Path, size: int, angle: int = 0, transpose_quirk: bool = False) -> np.ndarray:
    """uint8 [3, size, size]: optional rotation, central half-crop, area resize."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if angle:
            im = im.rotate(angle)
        w, h = im.size
        im = im.crop((w // 4, h // 4, (w * 3) // 4, (h * 3) // 4)).resize((size, size), Image.Resampling.BOX)
        array = np.asarray(im, dtype=np.uint8)
    return array.transpose(2, 1, 0) if transpose_quirk else array.transpose(2, 0, 1)


def load_folders(root: Path, config, name: str) -> DataBundle:
    split = curated_split(root, config.test_per_class)
    step = 360 // config.rotations
    tensors = {}
    for which in ("train", "test"):
        images, labels = [], []
        for c, (test_files, train_files) in enumerate(split):
            for f in (train_files if which == "train" else test_files):
                angles = [step * i for i in range(config.rotations)] if which == "train" else [0]
                for angle in angles:
                    images.append(preprocess(root / str(c) / f, config.size, angle, config.transpose_quirk))
                    labels.append(c)
        tensors[which] = (torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64))
    info = DatasetInfo(name, NUM_CLASSES, (3, config.size, config.size), MEAN, STD, CLASS_NAMES)
    return DataBundle(UInt8Images(*tensors["train"]), UInt8Images(*tensors["test"]), info,
                      batch_size=config.batch_size, test_batch_size=config.test_batch_size)


def load_gzoo2(config) -> DataBundle:
    if config.root:
        root = Path(config.root).expanduser()
    elif os.environ.get("DEEPSCOPE_DATA"):
        root = Path(os.environ["DEEPSCOPE_DATA"]).expanduser() / "gzoo2"
    else:
        raise DataError(f"gzoo2: no root given and $DEEPSCOPE_DATA is not set; set root = \"/path/to/gzoo2\". "
                        f"{HOW_TO_GET}")
    if not root.is_dir():
        raise DataError(f"gzoo2: {root} does not exist. {HOW_TO_GET}")
    return load_folders(root, config, "gzoo2")


# --------------------------------------------------------------------------- the catalogue

def _f(row: dict, question: str, suffix: str) -> float:
    return float(row[f"{question}_{suffix}"])


def class_confidences(row: dict, suffix: str = "fraction") -> list[float]:
    """The nine classes' confidences, then star-or-artifact: products of vote fractions down the tree."""
    def q(name):
        return _f(row, name, suffix)

    smooth, disk = q("t01_smooth_or_features_a01_smooth"), q("t01_smooth_or_features_a02_features_or_disk")
    edge_on, face_on = disk * q("t02_edgeon_a04_yes"), disk * q("t02_edgeon_a05_no")
    bar, no_bar = face_on * q("t03_bar_a06_bar"), face_on * q("t03_bar_a07_no_bar")
    spiral, no_spiral = q("t04_spiral_a08_spiral"), q("t04_spiral_a09_no_spiral")
    return [smooth * q("t07_rounded_a16_completely_round"), smooth * q("t07_rounded_a17_in_between"),
            smooth * q("t07_rounded_a18_cigar_shaped"),
            edge_on * (q("t09_bulge_shape_a25_rounded") + q("t09_bulge_shape_a26_boxy")),
            edge_on * q("t09_bulge_shape_a27_no_bulge"),
            bar * spiral, bar * no_spiral, no_bar * spiral, no_bar * no_spiral,
            q("t01_smooth_or_features_a03_star_or_artifact")]


def select_galaxies(catalogue: Path, images: Path, per_class: int, id_column: str = "dr7objid",
                    suffix: str = "fraction") -> list[list[str]]:
    """Per class, the ids of its ``per_class`` most confident galaxies that have an image (ties by id)."""
    ranked: list[list[tuple[float, str]]] = [[] for _ in range(NUM_CLASSES)]
    with open(catalogue, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in (id_column, f"t01_smooth_or_features_a01_smooth_{suffix}") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"gzoo2-catalogue: {catalogue} has no column(s) {missing}; it needs {id_column!r} and "
                            f"the t.._{suffix} vote columns of GZ2 Table 5 (set id_column / suffix)")
        for row in reader:
            conf = class_confidences(row, suffix)
            label = int(np.argmax(conf))
            if label < NUM_CLASSES and (images / f"{row[id_column]}.jpg").is_file():
                ranked[label].append((conf[label], row[id_column]))
    out = []
    for c, entries in enumerate(ranked):
        entries.sort(key=lambda e: (-e[0], e[1]))
        if len(entries) < per_class:
            raise DataError(f"gzoo2-catalogue: class {c} ({CLASS_NAMES[c]}) has only {len(entries)} galaxies with "
                            f"an image in {images}; lower per_class (now {per_class})")
        out.append([ident for _, ident in entries[:per_class]])
    return out


def load_gzoo2_catalogue(config) -> DataBundle:
    from deepscope import Cache

    catalogue, images = Path(config.catalogue).expanduser().resolve(), Path(config.images).expanduser().resolve()
    if not catalogue.is_file():
        raise DataError(f"gzoo2-catalogue: the catalogue {catalogue} does not exist. {HOW_TO_GET}")
    if not images.is_dir():
        raise DataError(f"gzoo2-catalogue: the image directory {images} does not exist. {HOW_TO_GET}")
    stat = catalogue.stat()
    key = {"version": CURATED_VERSION, "catalogue": str(catalogue), "size": stat.st_size,
           "mtime_ns": stat.st_mtime_ns, "images": str(images), "per_class": config.per_class,
           "id_column": config.id_column, "suffix": config.suffix}

    def build(directory):
        for c, ids in enumerate(select_galaxies(catalogue, images, config.per_class, config.id_column,
                                                config.suffix)):
            (Path(directory) / str(c)).mkdir()
            for ident in ids:
                shutil.copyfile(images / f"{ident}.jpg", Path(directory) / str(c) / f"{ident}.jpg")

    root = Cache().entry("gzoo2-curated", key).get_or_build(build)
    bundle = load_folders(Path(root), config, "gzoo2-catalogue")
    return bundle
