"""Measurements behind docs/sparsity.md: LeNet-300-100 on full Fashion-MNIST.

    OMP_NUM_THREADS=1 .venv/bin/python examples/sparsity/lenet_sweeps.py random   # effective vs direct, no training
    for p in random/uniform magnitude snip synflow; do   # accuracy vs effective compression
        OMP_NUM_THREADS=1 .venv/bin/python examples/sparsity/lenet_sweeps.py pruners $p; done
    OMP_NUM_THREADS=1 .venv/bin/python examples/sparsity/lenet_sweeps.py plot

Self-contained (a plain LeNet-300-100 with biases, no BatchNorm, and the IDX
files read directly) so it runs without the standard plugin; the pruners,
quotas, effective masks and the effective target are the plugin's own code.
Writes PNG plots and a JSON of every number into docs/sparsity/.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from deepscope_sparsity import pruners as P
from deepscope_sparsity.configs import (MagnitudePrunerConfig, RandomPrunerConfig, SnipPrunerConfig,
                                        SynflowPrunerConfig)
from deepscope_sparsity.effective import EffectiveMasks, sparsity_report
from deepscope_sparsity.effective_target import prune_effective
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


def train(state: RunState, epochs: int, lr: float) -> None:
    opt = torch.optim.SGD(state.model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(state.seed)
    state.model.train()
    for _ in range(epochs):
        for x, y in state.data.train_loader(generator=gen):
            loss = nn.functional.cross_entropy(state.model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            state.apply_masks()
            state.step += 1
        state.epoch += 1


@torch.no_grad()
def test_accuracy(state: RunState) -> float:
    state.model.eval()
    x, y = state.data.tensors("test")
    return float((state.model(x).argmax(1) == y).float().mean())


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


PRUNERS = {
    "random/uniform": lambda c: P.RandomPruner(RandomPrunerConfig(compression=c, quota="uniform")),
    "random/igq": lambda c: P.RandomPruner(RandomPrunerConfig(compression=c, quota="igq")),
    "magnitude": lambda c: P.MagnitudePruner(MagnitudePrunerConfig(compression=c, rewind=True)),
    "snip": lambda c: P.SnipPruner(SnipPrunerConfig(compression=c, samples=30_000, batch_size=100)),
    "synflow": lambda c: P.SynflowPruner(SynflowPrunerConfig(compression=c)),
}


def pruner_sweep(args) -> None:
    """One pruner (or 'dense') per call, so that no single run is long; results go to one JSON each."""
    data = fashion_mnist()
    name = args.pruner
    rows = []
    dense = make_state(data, 0)
    if name in ("dense", "magnitude"):  # magnitude prunes the trained dense net (lottery-ticket style)
        t0 = time.time()
        train(dense, args.epochs, args.lr)
        rows.append({"pruner": "dense", "target": "-", "requested": 1.0, "direct": 1.0, "effective": 1.0,
                     "acc": test_accuracy(dense), "seconds": time.time() - t0})
        print(rows[-1], flush=True)
    if name != "dense":
        for c in args.compressions:
            for target in ("direct", "effective"):
                t0 = time.time()
                state = make_state(data, 0)
                if name == "magnitude":
                    state.model.load_state_dict(dense.model.state_dict())
                pruner = PRUNERS[name](c)
                if target == "direct":
                    masks = pruner.prune(state, None, 1 / c)
                else:
                    masks = prune_effective(pruner, state, None, 1 / c)
                state.set_masks(masks)
                report = sparsity_report(state.masks, EffectiveMasks(state.model, (1, 28, 28))(state.masks))
                prune_seconds = time.time() - t0
                train(state, args.epochs, args.lr)
                rows.append({"pruner": name, "target": target, "requested": c,
                             "direct": report["direct_compression"], "effective": report["effective_compression"],
                             "acc": test_accuracy(state), "prune_seconds": prune_seconds,
                             "seconds": time.time() - t0})
                print(rows[-1], flush=True)
    save(rows, f"pruners_lenet_{name.replace('/', '-')}.json")


def plot_all(args) -> None:
    rows = []
    for path in sorted(OUT.glob("pruners_lenet_*.json")):
        rows += json.loads(path.read_text(), parse_float=float)
    for r in rows:
        r["effective"] = float(r["effective"])
    plot_pruners(rows)
    print("| pruner | target | requested | direct compression | effective compression | test acc |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['pruner']} | {r['target']} | {r['requested']:g} | {r['direct']:.4g} | {r['effective']:.4g} | "
              f"{r['acc']:.4f} |")


def plot_pruners(rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, target in zip(axes, ("direct", "effective")):
        for name in PRUNERS:
            pts = [r for r in rows if r["pruner"] == name and r["target"] == target]
            if not pts:
                continue
            xs = [min(r["effective"], 3e5) for r in pts]
            ax.plot(xs, [r["acc"] for r in pts], marker="o", label=name)
        dense = [r["acc"] for r in rows if r["pruner"] == "dense"]
        if dense:
            ax.axhline(dense[0], color="k", ls=":", lw=0.8, label="dense")
        ax.set(xscale="log", xlabel="effective compression (inf drawn at 3e5)",
               title=f"target = {target}")
    axes[0].set_ylabel("test accuracy")
    axes[1].legend(fontsize=8)
    fig.suptitle("LeNet-300-100, Fashion-MNIST, pruned at init, short training")
    fig.savefig(OUT / "pruners_lenet.png", dpi=120, bbox_inches="tight")


def save(rows, name) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_text(json.dumps(rows, indent=1, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="which", required=True)
    r = sub.add_parser("random")
    r.add_argument("--seeds", type=int, default=3)
    p = sub.add_parser("pruners")
    p.add_argument("pruner", choices=["dense", *PRUNERS])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--compressions", type=float, nargs="+", default=[10, 100, 1000])
    sub.add_parser("plot")
    args = parser.parse_args()
    torch.set_num_threads(1)
    {"random": random_sweep, "pruners": pruner_sweep, "plot": plot_all}[args.which](args)


if __name__ == "__main__":
    main()
