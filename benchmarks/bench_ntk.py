"""Empirical NTK: ours (deepscope_ntk.empirical, chunked) against the torch.func tutorial's two methods;
and KIP steps per second.

    OMP_NUM_THREADS=1 python benchmarks/bench_ntk.py [--n 32] [--n-vp 8] [--chunk 8] [--repeats 2]
    OMP_NUM_THREADS=1 python benchmarks/bench_ntk.py --crossover      # jacobian against ntk-vp, ~3 min

The peer is the PyTorch tutorial "Neural Tangent Kernels" (intermediate_source/neural_tangent_kernels.py):
Jacobian contraction (vmap(jacrev) on both sides, one einsum per parameter, all examples at once) and
NTK-vector products (vjp then jvp, vmapped over the basis of one example's outputs and over both example
axes), written here from its description. Both sides compute the same full (n, n, k, k) kernel of the same
float32 network on the same inputs; the kernels are checked equal. Each measurement runs in a fresh
subprocess, so peak memory is that process's peak resident set size above its state after building the
model (ru_maxrss). Models: LeNet-300-100 (784-300-100-10, 266,610 parameters) and a small CNN on 28x28
(conv 16 - conv 32 - linear, stride 2). Prints one table: seconds, peak MiB, and the ratios peer / ours.

``--crossover``: our two methods side by side in one process on one thread, for registered models
(lenet-300-100, lenet-5, ntk-mlp of two widths) built through the plugin registry, n examples, k outputs,
modes "trace" and "full" (default chunk size 64, float64 as the ntk components compute): seconds of each
(best of 2 when a run is under a second, after one warm-up call per model), their ratio, the method
``method = "auto"`` picks, and how much slower the pick is than the faster one.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from deepscope_ntk.empirical import empirical_ntk


def lenet_300_100() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                         nn.Linear(100, 10))


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(32 * 7 * 7, 10))


MODELS = {"lenet-300-100": lenet_300_100, "small-cnn": small_cnn}


def tutorial_jacobian(net, x1, x2):
    """The tutorial's Jacobian contraction: every example's Jacobian at once, then einsum 'Naf,Mbf->NMab'."""
    params = {k: v.detach() for k, v in net.named_parameters()}

    def single(p, x):
        return functional_call(net, p, (x.unsqueeze(0),)).squeeze(0)

    jac1 = vmap(jacrev(single), (None, 0))(params, x1)
    jac2 = vmap(jacrev(single), (None, 0))(params, x2)
    terms = [torch.einsum("Naf,Mbf->NMab", a.flatten(2), b.flatten(2)) for a, b in zip(jac1.values(), jac2.values())]
    return torch.stack(terms).sum(0)


def tutorial_ntk_vp(net, x1, x2):
    """The tutorial's NTK-vector products: per pair of examples, vjp of one, jvp of the other, vmapped."""
    params = {k: v.detach() for k, v in net.named_parameters()}

    def single(p, x):
        return functional_call(net, p, (x.unsqueeze(0),)).squeeze(0)

    def pair(a, b):
        out, pullback = vjp(lambda p: single(p, a), params)

        def column(vec):
            (tangent,) = pullback(vec)
            return jvp(lambda p: single(p, b), (params,), (tangent,))[1]

        return vmap(column)(torch.eye(out.numel(), dtype=out.dtype))

    return vmap(vmap(pair, (None, 0)), (0, None))(x1, x2)


def one(model: str, method: str, n: int, chunk: int, repeats: int) -> dict:
    torch.manual_seed(0)
    net = MODELS[model]().eval()
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    runs = {
        "tutorial-jacobian": lambda: tutorial_jacobian(net, x, x),
        "tutorial-ntk-vp": lambda: tutorial_ntk_vp(net, x, x),
        "ours-jacobian": lambda: empirical_ntk(net, x, method="jacobian", mode="full", chunk_size=chunk),
        "ours-ntk-vp": lambda: empirical_ntk(net, x, method="ntk-vp", mode="full", chunk_size=chunk),
    }
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        kernel = runs[method]()
        times.append(time.perf_counter() - start)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # KiB -> MiB on Linux
    return {"seconds": min(times), "peak_mib": peak, "checksum": kernel.double().sum().item(),
            "shape": list(kernel.shape)}


def kip_steps_per_second(steps: int = 20, support: int = 100, target: int = 1000) -> float:
    """KIP on the analytic FC-1 NTK, float64, 784-d inputs: one loss + backward + Adam step per iteration."""
    from deepscope_ntk.analytic import fc_relu_kernel
    from deepscope_ntk.kip import kip_loss

    g = torch.Generator().manual_seed(0)
    xs = torch.rand(support, 784, generator=g, dtype=torch.float64).requires_grad_(True)
    ys = torch.randn(support, 10, generator=g, dtype=torch.float64)
    xt, yt = torch.rand(target, 784, generator=g, dtype=torch.float64), torch.randn(target, 10, generator=g,
                                                                                   dtype=torch.float64)
    opt = torch.optim.Adam([xs], lr=0.04)
    start = time.perf_counter()
    for _ in range(steps):
        loss, _ = kip_loss(lambda a, b=None: fc_relu_kernel(a, b, depth=1), xs, ys, xt, yt, 1e-6)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - start)


CROSSOVER_MODELS = ({"use": "lenet-300-100"}, {"use": "lenet-5"}, {"use": "ntk-mlp", "width": 128},
                    {"use": "ntk-mlp", "width": 512})


def registered_model(table: dict, k: int) -> nn.Module:
    """A registered model (behind its Network normalization) for 1x28x28 inputs and k classes."""
    from deepscope import DatasetInfo, build_network, get_host, structure_component

    spec, issues = structure_component(get_host().registry, "model", table, "$.model")
    if issues:
        raise SystemExit(f"cannot build {table}: {issues}")
    torch.manual_seed(0)
    return build_network(spec, DatasetInfo("bench", k, (1, 28, 28), mean=(0.5,), std=(0.25,))).eval()


def _best_seconds(call) -> float:
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    if first >= 1.0:
        return first
    start = time.perf_counter()
    call()
    return min(first, time.perf_counter() - start)


def crossover(sizes: list[int], outputs: list[int], dtype) -> None:
    from deepscope_ntk.empirical import choose_method

    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {dtype}, chunk 64")
    print(f"{'model':<22}{'P':>9}{'conv':>6}{'k':>4}{'n':>5}{'mode':>7}{'jac s':>9}{'vp s':>9}{'jac/vp':>8}"
          f"{'auto':>10}{'auto/best':>10}")
    started, worst = time.perf_counter(), 1.0
    for table in CROSSOVER_MODELS:
        for k in outputs:
            net = registered_model(table, k)
            params = sum(p.numel() for p in net.parameters())
            conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in net.modules())
            name = ",".join(f"{v}" for v in table.values())
            warm = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))
            for method in ("jacobian", "ntk-vp"):
                empirical_ntk(net, warm, method=method, dtype=dtype)
            for n in sizes:
                x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))
                for mode in ("trace", "full"):
                    secs = {m: _best_seconds(lambda m=m: empirical_ntk(net, x, method=m, mode=mode, dtype=dtype))
                            for m in ("jacobian", "ntk-vp")}
                    pick = choose_method(net, n, n, k, mode)
                    regret = secs[pick] / min(secs.values())
                    worst = max(worst, regret)
                    print(f"{name:<22}{params:>9}{str(conv):>6}{k:>4}{n:>5}{mode:>7}{secs['jacobian']:>9.3f}"
                          f"{secs['ntk-vp']:>9.3f}{secs['jacobian'] / secs['ntk-vp']:>8.2f}{pick:>10}{regret:>10.2f}",
                          flush=True)
    print(f"worst auto/best {worst:.2f}; wall {time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="examples (Jacobian methods)")
    parser.add_argument("--n-vp", type=int, default=8, help="examples (NTK-vector-product methods: N^2 cost)")
    parser.add_argument("--chunk", type=int, default=8, help="our chunk size")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--crossover", action="store_true", help="jacobian against ntk-vp (one process)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 24, 48], help="crossover: n")
    parser.add_argument("--outputs", type=int, nargs="+", default=[2, 5, 10], help="crossover: k")
    parser.add_argument("--float32", action="store_true", help="crossover: float32 instead of float64")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.crossover:
        crossover(args.sizes, args.outputs, torch.float32 if args.float32 else torch.float64)
        return
    if args.one:
        print(json.dumps(one(*args.one, args.size, args.chunk, args.repeats)))
        return
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, chunk {args.chunk}")
    print(f"{'model':<15}{'method':<11}{'n':>4}{'peer s':>9}{'ours s':>9}{'ratio':>7}{'peer MiB':>10}"
          f"{'ours MiB':>10}{'ratio':>7}  same kernel")
    for model in MODELS:
        for method, n in (("jacobian", args.n), ("ntk-vp", args.n_vp)):
            res = {}
            for side in ("tutorial", "ours"):
                out = subprocess.run([sys.executable, __file__, "--one", model, f"{side}-{method}", "--size", str(n),
                                      "--chunk", str(args.chunk), "--repeats", str(args.repeats)],
                                     capture_output=True, text=True, check=True)
                res[side] = json.loads(out.stdout.strip().splitlines()[-1])
            peer, ours = res["tutorial"], res["ours"]
            same = abs(peer["checksum"] - ours["checksum"]) <= 1e-4 * abs(peer["checksum"])
            print(f"{model:<15}{method:<11}{n:>4}{peer['seconds']:>9.3f}{ours['seconds']:>9.3f}"
                  f"{peer['seconds'] / ours['seconds']:>7.2f}{peer['peak_mib']:>10.1f}{ours['peak_mib']:>10.1f}"
                  f"{peer['peak_mib'] / max(ours['peak_mib'], 0.1):>7.2f}  {same}")
    print(f"KIP (FC-1 analytic NTK, float64, support 100, target 1000, 784-d): {kip_steps_per_second():.1f} steps/s")


if __name__ == "__main__":
    main()
