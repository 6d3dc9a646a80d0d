"""Build the Fashion-MNIST sample embedded in deepscope-standard.

Deterministic: for every class, the first 500 training and the first 100 test
images in file order (class-balanced 5,000 / 1,000), stored as uint8 with
``np.savez_compressed``. Run from the repository root:

    .venv/bin/python plugins/standard/scripts/build_fashion_mnist_sample.py \
        ../shared/data/fashion-mnist plugins/standard/deepscope_standard/data/fashion_mnist_sample.npz
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

TRAIN_PER_CLASS = 500
TEST_PER_CLASS = 100


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or raw) as a numpy array of unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def idx_path(source: Path, stem: str) -> Path:
    """``stem.gz`` in ``source``, else the uncompressed ``stem`` (both hold the same bytes)."""
    gz = source / f"{stem}.gz"
    return gz if gz.is_file() else source / stem


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` examples of every class, in file order."""
    chosen = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="directory with the four Fashion-MNIST IDX files (.gz or raw)")
    parser.add_argument("output", type=Path, help="the .npz file to write")
    args = parser.parse_args()
    arrays = {}
    for split, prefix, per_class in (("train", "train", TRAIN_PER_CLASS), ("test", "t10k", TEST_PER_CLASS)):
        images = read_idx(idx_path(args.source, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(idx_path(args.source, f"{prefix}-labels-idx1-ubyte"))
        keep = first_per_class(labels, per_class)
        arrays[f"x_{split}"] = np.ascontiguousarray(images[keep])
        arrays[f"y_{split}"] = labels[keep].astype(np.uint8)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output, **arrays)
    for key, value in arrays.items():
        print(f"{key}: shape {value.shape}, dtype {value.dtype}")
    print(f"wrote {args.output} ({args.output.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
