"""Goldilocks sweeps over the initialization scale alpha (or the softmax temperature), as pipelines.

Each point is one deepscope pipeline (one MLflow run) on LeNet-300-100 (bias-free, Kaiming-normal init,
as the reference) and the embedded Fashion-MNIST sample; a summary run collects the table and the plots.

  curvature:     positive curvature and frac_positive of the d=50 subspace Hessian, loss and entropy,
                 for 25 log-spaced alpha in [1e-3, 1e3] (or T = alpha^-L with --mode temperature);
  trainability:  test accuracy after full-batch GD with lr = base_lr / alpha^(L-2) vs alpha.

  .venv/bin/python examples/goldilocks/sweep_alpha.py curvature --out /tmp/goldilocks
  .venv/bin/python examples/goldilocks/sweep_alpha.py trainability --lo -1 --hi 2 --points 7 --steps 200 \
      --n-examples 1000 --out /tmp/goldilocks
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import time
from pathlib import Path


DEPTH = 3  # LeNet-300-100 has three linear layers: z(alpha theta) = alpha^3 z(theta)

HEADER = """
[run]
name = "{name}"
experiment = "goldilocks-sweeps"
seed = {seed}
[data]
use = "fashion-mnist-sample"
[model]
use = "lenet-300-100"
init = "kaiming-normal"
bias = false
{model_params}
"""

CURVATURE_STAGES = """
[[stage]]
do = "probe"
use = "curvature"
subspace_dim = {dim}
n_examples = {n}
subspace_seed = {seed}
lanczos_steps = 0
probes = {probes}
[[stage]]
do = "probe"
use = "confidence"
n_examples = {n}
alignment_examples = 0
"""

TRAIN_STAGES = """
[[stage]]
do = "train"
use = "full-batch-gd"
steps = {steps}
base_lr = {base_lr}
n_examples = {n}
log_every = {steps}
sharpness_steps = 0
"""


def host():
    import deepscope_goldilocks
    import deepscope_standard
    from deepscope.testing import make_host

    return make_host(deepscope_standard, deepscope_goldilocks)


def run(text: str, plugins, tracking_uri) -> dict[str, float]:
    from deepscope import parse_pipeline, run_pipeline

    pipeline = parse_pipeline(text, plugins.registry, file="<sweep>")
    return run_pipeline(pipeline, plugins, tracking_uri=tracking_uri).metrics


def model_params(mode: str, alpha: float) -> str:
    if mode == "scale":
        return f"init_scale = {alpha!r}"
    return f"temperature = {alpha ** -DEPTH!r}"


def log_summary(name: str, rows: list[dict], figures: dict, out: Path | None, tracking_uri) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import mlflow

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.csv").write_text(buf.getvalue())
        for fname, fig in figures.items():
            fig.savefig(out / fname, dpi=120, bbox_inches="tight")
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("goldilocks-sweeps")
    with mlflow.start_run(run_name=f"{name}-summary"):
        mlflow.log_text(buf.getvalue(), f"{name}.csv")
        for fname, fig in figures.items():
            mlflow.log_figure(fig, fname)


def plot_curvature(rows: list[dict], args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    xlabel = "alpha (weights x alpha)" if args.mode == "scale" else f"alpha (T = alpha^-{DEPTH})"
    entropy_axis = axes[2].twinx()
    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["seed"] == seed]
        xs = [r["alpha"] for r in mine]
        axes[0].plot(xs, [r["positive_curvature"] for r in mine], "o-", ms=3, label=f"seed {int(seed)}")
        axes[1].plot(xs, [r["frac_positive"] for r in mine], "o-", ms=3)
        axes[2].plot(xs, [r["loss"] for r in mine], "o-", ms=3, color="C0")
        entropy_axis.plot(xs, [r["entropy"] for r in mine], "s--", ms=3, color="C1")
    axes[0].axhline(math.sqrt(args.dim), color="gray", lw=0.5)
    for ax, title in zip(axes, (f"Tr(H)/||H||_F (d={args.dim}; line: sqrt(d))", "fraction of positive eigenvalues",
                                "initial loss (log, o) / entropy (s)")):
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(title)
    axes[0].legend()
    axes[2].set_yscale("log")
    axes[2].set_ylabel("loss", color="C0")
    entropy_axis.set_ylabel("entropy", color="C1")
    fig.suptitle(f"LeNet-300-100 (bias-free) on Fashion-MNIST sample, {args.n_examples} examples")
    return fig


def replot(args) -> None:
    """Redraw the curvature figure from a CSV written by an earlier run (no measuring)."""
    with open(args.replot) as fh:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    fig = plot_curvature(rows, args)
    out = args.out or args.replot.parent
    fig.savefig(out / f"curvature_vs_alpha_{args.mode}.png", dpi=120, bbox_inches="tight")


def curvature(args, plugins) -> None:
    alphas = [10 ** (args.lo + i * (args.hi - args.lo) / (args.points - 1)) for i in range(args.points)]
    rows = []
    for seed in args.seeds:
        for alpha in alphas:
            start = time.perf_counter()
            text = HEADER.format(name=f"curvature-{args.mode}-{alpha:.3g}", seed=seed,
                                 model_params=model_params(args.mode, alpha))
            text += CURVATURE_STAGES.format(dim=args.dim, n=args.n_examples, seed=seed, probes=args.probes)
            m = run(text, plugins, args.tracking_uri)
            row = {"seed": seed, "alpha": alpha, "temperature": alpha ** -DEPTH if args.mode == "temperature" else 1.0,
                   **{k: m.get(f"probe/curvature/{k}", math.nan) for k in
                      ("positive_curvature", "frac_positive", "subspace_trace", "subspace_frobenius")},
                   **{k: m.get(f"probe/confidence/{k}", math.nan) for k in
                      ("loss", "entropy", "grad_norm", "prior_mismatch", "zero_logit_fraction", "gamma")},
                   "seconds": time.perf_counter() - start}
            if args.probes:
                row["positive_curvature_hutchinson"] = m.get("probe/curvature/positive_curvature_hutchinson")
            rows.append(row)
            print(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                  flush=True)
    fig = plot_curvature(rows, args)
    log_summary(f"curvature_vs_alpha_{args.mode}", rows, {f"curvature_vs_alpha_{args.mode}.png": fig}, args.out,
                args.tracking_uri)


def trainability(args, plugins) -> None:
    import matplotlib.pyplot as plt

    alphas = [10 ** (args.lo + i * (args.hi - args.lo) / (args.points - 1)) for i in range(args.points)]
    rows = []
    for alpha in alphas:
        start = time.perf_counter()
        text = HEADER.format(name=f"trainability-{alpha:.3g}", seed=args.seeds[0],
                             model_params=model_params("scale", alpha))
        text += TRAIN_STAGES.format(steps=args.steps, base_lr=args.base_lr, n=args.n_examples)
        m = run(text, plugins, args.tracking_uri)
        key = "train/full-batch-gd/"
        row = {"alpha": alpha, **{k: m.get(key + k, math.nan) for k in
                                  ("train_acc", "test_acc", "loss", "cos_to_init", "grad_norm",
                                   "zero_logit_fraction")},
               "seconds": time.perf_counter() - start}
        rows.append(row)
        print(", ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    xs = [r["alpha"] for r in rows]
    ax.plot(xs, [r["test_acc"] for r in rows], "o-", label="test accuracy")
    ax.plot(xs, [r["train_acc"] for r in rows], "s--", label="train accuracy")
    ax.plot(xs, [r["cos_to_init"] for r in rows], "^:", label="cos(w, w_init)")
    ax.set_xscale("log")
    ax.set_xlabel("alpha")
    ax.set_title(f"full-batch GD on {args.n_examples} examples, {args.steps} steps,\n"
                 f"lr = {args.base_lr}/alpha^{DEPTH - 2}")
    ax.legend()
    log_summary("accuracy_vs_alpha", rows, {"accuracy_vs_alpha.png": fig}, args.out, args.tracking_uri)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["curvature", "trainability"])
    parser.add_argument("--mode", choices=["scale", "temperature"], default="scale")
    parser.add_argument("--points", type=int, default=25)
    parser.add_argument("--lo", type=float, default=-3.0, help="log10 of the smallest alpha")
    parser.add_argument("--hi", type=float, default=3.0, help="log10 of the largest alpha")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--n-examples", type=int, default=1000, help="probe examples / full-batch size")
    parser.add_argument("--probes", type=int, default=0, help="Hutchinson probes per point (0: skip)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--base-lr", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=None, help="also write the CSV and PNGs here")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--replot", type=Path, default=None, help="only redraw the curvature plot from this CSV")
    args = parser.parse_args()
    if args.replot is not None:
        return replot(args)
    plugins = host()
    (curvature if args.what == "curvature" else trainability)(args, plugins)


if __name__ == "__main__":
    main()
