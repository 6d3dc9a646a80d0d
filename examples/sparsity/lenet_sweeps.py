"""The one measurement behind docs/sparsity.md that the sweeps do not replace yet: LeNet-300-100 on full
Fashion-MNIST, effective against direct compression of random pruning (no training).

    OMP_NUM_THREADS=1 .venv/bin/python examples/sparsity/lenet_sweeps.py random

It stays because its table averages the connected seeds and counts the disconnected ones, where
`deepscope sweep collect` averages an infinite compression as infinity. The accuracy-against-effective-
compression study runs through the sweeps lenet300_{pruners,random_quotas,magnitude}_effective_sweep.toml.
Self-contained (a plain LeNet-300-100 with biases, no BatchNorm, and the IDX files read directly); the
quotas, effective masks and the effective target are the plugin's own code. Writes a PNG and a JSON into
docs/sparsity/.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from deepscope_sparsity import pruners as P
from deepscope_sparsity.configs import RandomPrunerConfig
from deepscope_sparsity.effective import EffectiveMasks, sparsity_report
from deepscope import DataBundle, DatasetInfo, Network, RunState

DATA = Path(os.environ.get("DEEPSCOPE_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data")) \
    / "fashion-mnist"
OUT = Path(__file__).resolve().parents[2] / "docs" / "sparsity"
MEAN, STD = (0.2860,), (0.3530,)


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path, "rb").read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist() -> DataBundle:
    def split(prefix):
        x = torch.from_numpy(read_idx(DATA / f"{prefix}-images-idx3-ubyte.gz").copy()).float().div(255).unsqueeze(1)
        y = torch.from_numpy(read_idx(DATA / f"{prefix}-labels-idx1-ubyte.gz").copy()).long()
        return TensorDataset(x, y)

    info = DatasetInfo("fashion-mnist", 10, (1, 28, 28), MEAN, STD)
    return DataBundle(split("train"), split("t10k"), info, batch_size=100, test_batch_size=2000)


def lenet_300_100(seed: int) -> Network:
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                         nn.Linear(100, 10))
    return Network(body, MEAN, STD)


def make_state(data: DataBundle, seed: int) -> RunState:
    model = lenet_300_100(seed)
    state = RunState(pipeline=SimpleNamespace(run=SimpleNamespace(seed=seed)), host=None,
                     device=torch.device("cpu"), data=data, model=model)
    state.init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state


def random_sweep(args) -> None:
    data = fashion_mnist()
    compressions = [10 ** (0.2 * i) for i in range(5, 26)]
    rows = []
    for seed in range(args.seeds):
        state = make_state(data, seed)
        effective = EffectiveMasks(state.model, (1, 28, 28))
        for quota in ("uniform", "erk", "igq"):
            pruner = P.RandomPruner(RandomPrunerConfig(compression=10, quota=quota))
            for c in compressions:
                masks = pruner.prune(state, None, 1 / c)
                report = sparsity_report(masks, effective(masks))
                rows.append({"seed": seed, "quota": quota, "requested": c,
                             "direct": report["direct_compression"], "effective": report["effective_compression"]})
    save(rows, "random_lenet.json")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for quota in ("uniform", "erk", "igq"):
        pts = [r for r in rows if r["quota"] == quota and r["seed"] == 0]
        eff = [r["effective"] if math.isfinite(r["effective"]) else np.nan for r in pts]
        ax.plot([r["direct"] for r in pts], eff, marker="o", ms=3, label=f"random/{quota}")
    lim = [10, 1e5]
    ax.plot(lim, lim, "k--", lw=0.8, label="effective = direct")
    ax.set(xscale="log", yscale="log", xlabel="direct compression", ylabel="effective compression",
           title="LeNet-300-100, random pruning at init (seed 0)")
    ax.legend()
    fig.savefig(OUT / "random_lenet.png", dpi=120, bbox_inches="tight")
    print_table(rows)


def print_table(rows) -> None:
    print("| quota | requested compression | direct | effective (mean over seeds) | disconnected seeds |")
    print("|---|---|---|---|---|")
    for quota in ("uniform", "erk", "igq"):
        for c in sorted({r["requested"] for r in rows}):
            pts = [r for r in rows if r["quota"] == quota and r["requested"] == c]
            finite = [r["effective"] for r in pts if math.isfinite(r["effective"])]
            eff = f"{np.mean(finite):.4g}" if finite else "inf"
            print(f"| {quota} | {c:.4g} | {np.mean([r['direct'] for r in pts]):.4g} | {eff} | "
                  f"{len(pts) - len(finite)}/{len(pts)} |")


def save(rows, name) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_text(json.dumps(rows, indent=1, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="which", required=True)
    r = sub.add_parser("random")
    r.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    random_sweep(args)


if __name__ == "__main__":
    main()
