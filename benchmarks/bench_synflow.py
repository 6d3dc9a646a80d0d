"""Benchmark: our SynFlow pruner (float64 and float32 scoring) vs a plain float32 loop in the style of
Synaptic-Flow, in one process, on the same ResNet-18 (CIFAR stem), the same schedule and the same masks.

The reference loop is written here from the algorithm (Tanaka et al. 2020): a copy of the model with
BatchNorm removed and biases zeroed (what our linearized copy does too, so both score the same
function), absolute weights times the current mask, an all-ones input, one forward and backward,
scores |w * dR/dw|, a global ``kthvalue`` over the scores of the weights still alive, masks applied;
density d^(t/T) at step t. The benchmark checks the masks: ours must agree with the reference up to
rounding near each step's threshold (at most ``--max-differ`` of the kept weights differ). Both sides
round: our linearized copy sums the path products in another order than the reference's model, so in
float32 the weights whose scores sit within rounding of a step's threshold can fall either way, and a
weight kept or dropped early changes the later scores (on one machine float32 gave the reference's
masks exactly and float64 differed in 0.28% of the kept weights; on another, the reverse).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_synflow.py [--iterations 10] [--compression 100]
"""

from __future__ import annotations

import argparse
import copy
import time
from types import SimpleNamespace

import torch
from torch import nn

from deepscope import DatasetInfo, Network, RunState, prunable_parameters
from deepscope_sparsity.configs import SynflowPrunerConfig
from deepscope_sparsity.pruners import SynflowPruner
from deepscope_standard.models import build_resnet18
from deepscope_standard.models_config import ResNetConfig

CIFAR = DatasetInfo("cifar-shaped", 10, (3, 32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def make_state(seed: int = 0) -> RunState:
    torch.manual_seed(seed)
    model = Network(build_resnet18(ResNetConfig(), CIFAR), CIFAR.mean, CIFAR.std)
    data = SimpleNamespace(info=CIFAR)
    return RunState(pipeline=SimpleNamespace(run=SimpleNamespace(seed=seed)), host=None,
                    device=torch.device("cpu"), data=data, model=model)


def reference_synflow(model: nn.Module, names: list[str], density: float, iterations: int) -> dict:
    """The plain float32 loop: returns the final masks {name: bool tensor}."""
    net = copy.deepcopy(model).float().eval()
    for parent in list(net.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)) or type(child).__name__ == "Normalize":
                setattr(parent, child_name, nn.Identity())
    params = dict(net.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            if name.endswith("bias"):
                p.zero_()
    weights = {n: params[n].detach().abs().clone() for n in names}
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    x = torch.ones((1, *CIFAR.input_shape))
    for t in range(1, iterations + 1):
        with torch.no_grad():
            for n in names:
                params[n].copy_(weights[n] * masks[n])
        net.zero_grad(set_to_none=True)
        net(x).sum().backward()
        scores = {n: (params[n].grad * params[n]).detach().abs() for n in names}
        flat = torch.cat([torch.where(masks[n], scores[n], torch.full_like(scores[n], -1.0)).flatten()
                          for n in names])
        keep = int(round(density ** (t / iterations) * total))
        threshold = torch.kthvalue(flat, total - keep + 1).values
        masks = {n: masks[n] & (scores[n] >= threshold) for n in names}
    return masks


def timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def differing(a: dict, b: dict) -> int:
    return sum(int((a[n] ^ b[n]).sum()) for n in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=10, help="SynFlow iterations per run (paper: 100)")
    parser.add_argument("--compression", type=float, default=100.0)
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs per side")
    parser.add_argument("--max-differ", type=float, default=1e-2,
                        help="allowed differing fraction of kept weights (rounding near the thresholds)")
    args = parser.parse_args()
    density = 1.0 / args.compression
    state = make_state()
    names = list(prunable_parameters(state.model))
    kept = int(round(density * sum(p.numel() for p in state.prunable().values())))
    print(f"ResNet-18 (CIFAR stem), {len(names)} prunable tensors, {kept} weights kept at {args.compression:g}x, "
          f"{args.iterations} iterations, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")

    ref_time, ref_masks = timed(lambda: reference_synflow(state.model, names, density, args.iterations),
                                args.repeats)
    rows = [("reference loop (float32)", ref_time, 0)]
    for dtype in ("float64", "float32"):
        def ours():
            pruner = SynflowPruner(SynflowPrunerConfig(compression=args.compression, iterations=args.iterations,
                                                       dtype=dtype))
            return pruner.prune(state, None, density)

        t, masks = timed(ours, args.repeats)
        d = differing(masks, ref_masks)
        rows.append((f"ours ({dtype})", t, d))
        if d > args.max_differ * kept:
            raise SystemExit(f"ours ({dtype}) differs from the reference in {d} weights (> {args.max_differ:g} "
                             f"of {kept} kept): not the same masks up to rounding")
    for label, t, d in rows:
        print(f"{label:26s} {t / args.iterations * 1000:8.1f} ms/iteration   speed vs reference "
              f"{ref_time / t:5.2f}x   weights differing from the reference: {d}")


if __name__ == "__main__":
    main()
