"""Benchmark: goldilocks Hessian probes vs PyHessian and torch.autograd.functional.hessian.

Same model, same batch, same number of Hessian-vector products on each side:
- Hutchinson trace with 100 Rademacher probes: ours (both HVP engines, probes
  batched) vs PyHessian ``hessian(...).trace(maxIter=100, tol=-inf)``. PyHessian
  stops once ``abs(mean - trace) / (trace + 1e-6) < tol``; with a negative running
  trace the left side is negative, so even tol=0 stops early (fewer products than
  ours). No number is below -inf, so tol=-inf always runs all maxIter probes;
- the exact d=50 subspace Hessian: ours vs ``torch.autograd.functional.hessian``
  of w -> loss(theta + P'w), the reference code's method.
Models: LeNet-300-100 (MNIST-sized batch of 128) and LeNet-5 on CIFAR-sized inputs (batch 128).

Every Hutchinson line also reports the floating-point operations it ran (``torch.utils.flop_counter``,
counted in a separate untimed run) and the rate it reached, beside the rate of one large float32
matrix product on this device: at equal operations, no method can beat the peer by more than the
ratio of that peak to the peer's rate, so the table says what bounds the speed-up.
Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_goldilocks_hessian.py [--device cuda]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

REPEATS = 3

from deepscope_goldilocks.hessian import FlatModel, LossHessian, cross_entropy, hutchinson, random_subspace


def lenet_300_100() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                         nn.Linear(100, 10))


def lenet5_cifar() -> nn.Module:
    """LeNet-5 for 3x32x32 inputs (the paper's CIFAR-10 network; about 62k parameters)."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 5), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats=REPEATS):
    """Best of ``repeats`` wall-clock times (the machine is shared: the minimum is the least noisy)."""
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def counted_flops(fn) -> float:
    """Floating-point operations of one untimed run of ``fn`` (matrix products and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def matmul_peak(device, n: int = 2048) -> float:
    """FLOP/s of one n x n float32 matrix product (best of 5): what this device's GEMM can reach."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t, _ = timed(lambda: a @ b, device, repeats=5)
    return 2 * n ** 3 / t


def bench(name, model, x, y, device, probes, dim, chunk, peak):
    from pyhessian import hessian as PyHessian

    model = model.to(device)
    x, y = x.to(device), y.to(device)
    flat = FlatModel(model)
    print(f"\n== {name}: {flat.dim:,} parameters, batch {x.shape[0]}, device {device.type}")
    # warm-up (torch.func set-up, kernels), not timed
    LossHessian(flat, [(x, y)]).matmul(torch.randn(2, flat.dim, device=device))

    rows = {}
    for mode in ("forward-over-reverse", "double-backprop"):
        h = LossHessian(flat, [(x, y)], mode=mode, chunk_size=chunk)
        run = (lambda h=h: hutchinson(h.matmul, flat.dim, probes, torch.Generator().manual_seed(0)))
        t, out = timed(run, device)
        rows[f"ours {mode}"] = (t, out["trace"], counted_flops(run))

    def pyhessian_trace():
        torch.manual_seed(0)
        return PyHessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=device.type == "cuda").trace(
            maxIter=probes, tol=-math.inf)  # never stops early (see the module docstring)

    t, samples = timed(pyhessian_trace, device)
    assert len(samples) == probes, f"PyHessian ran {len(samples)} of {probes} products: not comparable"
    rows["PyHessian trace()"] = (t, sum(samples) / len(samples), counted_flops(pyhessian_trace))
    print(f"Hutchinson trace, {probes} probes:")
    peer, _, peer_flops = rows["PyHessian trace()"]
    for key, (t, tr, flops) in rows.items():
        print(f"  {key:32s} {t:8.2f} s   trace {tr:10.4f}   PyHessian/this = {peer / t:5.2f}x   "
              f"{flops / 1e9:6.2f} GFLOP at {flops / t / 1e9:5.1f} GFLOP/s")
    print(f"  bound at equal work: the GEMM peak {peak / 1e9:.1f} GFLOP/s over PyHessian's "
          f"{peer_flops / peer / 1e9:.1f} GFLOP/s = {peak * peer / peer_flops:.2f}x")

    basis = random_subspace(flat.dim, dim, torch.Generator().manual_seed(0)).to(device)
    sub_rows = {}
    for mode in ("forward-over-reverse", "double-backprop"):
        h = LossHessian(flat, [(x, y)], mode=mode, chunk_size=chunk)
        sub_rows[f"ours {mode}"] = timed(lambda: h.subspace(basis), device)

    def reference():
        theta = flat.theta

        def restricted(w):
            return cross_entropy(flat.logits(theta + basis.T @ w, x), y)

        return torch.autograd.functional.hessian(restricted, torch.zeros(dim, device=device))

    sub_rows["autograd.functional.hessian"] = timed(reference, device)
    peer_t, peer_h = sub_rows["autograd.functional.hessian"]
    print(f"Subspace Hessian, d = {dim}:")
    for key, (t, hs) in sub_rows.items():
        err = ((hs - peer_h).abs().max() / peer_h.abs().max()).item()
        print(f"  {key:32s} {t:8.2f} s   max rel diff {err:.1e}   autograd/this = {peer_t / t:5.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=25, help="vectors per batched HVP pass (ours)")
    parser.add_argument("--repeats", type=int, default=3, help="best-of repeats of every timing")
    parser.add_argument("--only", choices=["lenet", "cnn"], default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    global REPEATS
    REPEATS = args.repeats
    peak = matmul_peak(device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"float32 GEMM peak {peak / 1e9:.1f} GFLOP/s (2048 x 2048)")
    g = torch.Generator().manual_seed(0)
    if args.only in (None, "lenet"):
        torch.manual_seed(0)
        bench("LeNet-300-100", lenet_300_100(), torch.rand(args.batch, 1, 28, 28, generator=g),
              torch.randint(0, 10, (args.batch,), generator=g), device, args.probes, args.dim, args.chunk, peak)
    if args.only in (None, "cnn"):
        torch.manual_seed(0)
        bench("LeNet-5 (CIFAR-sized CNN)", lenet5_cifar(), torch.rand(args.batch, 3, 32, 32, generator=g),
              torch.randint(0, 10, (args.batch,), generator=g), device, args.probes, args.dim, args.chunk, peak)


if __name__ == "__main__":
    main()
