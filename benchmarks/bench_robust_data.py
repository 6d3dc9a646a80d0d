"""Adversarial KIP against plain KIP: seconds per outer step, side by side in one process.

    OMP_NUM_THREADS=1 python benchmarks/bench_robust_data.py [--device cpu|cuda] [--support 100]
        [--target 1000] [--attack-steps 1 5 10 20] [--steps 5] [--repeats 3]

Both run the distillers' own step: KIP is kip_loss + backward + Adam on the support; adversarial KIP adds its
inner PGD (``AdversarialKIP.target_points``: attack_steps gradient steps of the per-target loss against the
fixed predictor, best iterate kept) before the same step. The kernel is the analytic FC-1 NTK in float64
on 784-d inputs (Fashion-MNIST's size), support 100, target batch 1000, as on the CPU recipe. An inner PGD
step costs a kernel evaluation against the fixed support and its input gradient, without KIP's solve, so
the ratio adversarial / plain should stay at or below 1 + attack_steps; the table prints both.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from deepscope_ntk import fc_relu_kernel, kip_loss
from deepscope_robust_data.adversarial_kip import AdversarialKIP
from deepscope_robust_data.configs import AdversarialKIPConfig


def kernel(a, b=None):
    return fc_relu_kernel(a, b, depth=1)


def make_problem(support: int, target: int, device: torch.device, classes: int = 10):
    g = torch.Generator().manual_seed(0)
    xs = torch.rand(support, 1, 28, 28, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    ys = (torch.nn.functional.one_hot(torch.arange(support) % classes, classes).double() - 1 / classes).to(device)
    xt = torch.rand(target, 1, 28, 28, generator=g, dtype=torch.float64).to(device)
    yt = (torch.nn.functional.one_hot(torch.arange(target) % classes, classes).double() - 1 / classes).to(device)
    return xs, ys, xt, yt


def seconds_per_step(distiller, problem, steps: int, repeats: int, device: torch.device) -> float:
    xs, ys, xt, yt = problem
    opt = torch.optim.Adam([xs], lr=0.01)
    gen = torch.Generator().manual_seed(1)

    def one_step():
        points, _ = distiller.target_points(kernel, xs, ys, xt, yt, 1e-6, gen)
        loss, _ = kip_loss(kernel, xs, ys, points, yt, 1e-6)
        opt.zero_grad()
        loss.backward()
        opt.step()

    one_step()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            one_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--support", type=int, default=100)
    parser.add_argument("--target", type=int, default=1000)
    parser.add_argument("--attack-steps", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--steps", type=int, default=5, help="outer steps per timing")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, support {args.support}, "
          f"target {args.target}, FC-1 analytic NTK, float64")
    plain = AdversarialKIP(AdversarialKIPConfig(eps=0.0))  # eps = 0 takes kip's path exactly
    base = seconds_per_step(plain, make_problem(args.support, args.target, device), args.steps, args.repeats, device)
    print(f"{'distiller':<24}{'s/step':>10}{'steps/s':>10}{'ratio':>8}{'1 + k':>7}{'ratio/(1+k)':>13}")
    print(f"{'kip':<24}{base:>10.4f}{1 / base:>10.2f}{1.0:>8.2f}{'':>7}{'':>13}")
    for k in args.attack_steps:
        adv = AdversarialKIP(AdversarialKIPConfig(eps=0.1, attack_steps=k, random_start=True))
        t = seconds_per_step(adv, make_problem(args.support, args.target, device), args.steps, args.repeats, device)
        print(f"{f'adversarial-kip k={k}':<24}{t:>10.4f}{1 / t:>10.2f}{t / base:>8.2f}{1 + k:>7}"
              f"{t / base / (1 + k):>13.2f}")


if __name__ == "__main__":
    main()
