"""Time deepscope's ``pgd`` against torchattacks' PGD on the same model, batch and settings.

Models: ResNet-18 (CIFAR stem) on 32x32x3 and LeNet-5 on 28x28x1, both in eval
mode with random weights (the cost of an attack does not depend on the
weights). Each attack runs ``--repeats`` times, alternating ours and theirs;
the table shows median seconds per attack and the ratio theirs / ours (> 1:
ours is faster). On CPU it also reports process CPU time, which is what to
compare on a shared machine (wall time there mostly measures the neighbours).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pgd.py              # CPU: batch 16, 5 steps
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pgd.py --batch 64 --steps 10
    .venv/bin/python benchmarks/bench_pgd.py --device cuda                   # GPU: batch 256, 10 steps,
                                                                             # adds a channels_last + bf16 row
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from deepscope_standard import pgd


def registered_model(name: str, shape: tuple[int, int, int]) -> nn.Module:
    """The standard plugin's model (the same one pipelines use), behind its normalization layer."""
    from deepscope import DatasetInfo, build_network, get_host, structure_component

    info = DatasetInfo("bench", 10, shape, (0.5,) * shape[0], (0.25,) * shape[0])
    spec, issues = structure_component(get_host().registry, "model", {"use": name}, "bench")
    assert not issues, issues
    return build_network(spec, info)


def timed(fn, device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(name, model, shape, args, device) -> list[tuple]:
    import torchattacks

    model = model.to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand((args.batch, *shape), generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    eps, steps = args.eps, args.steps
    alpha = 2.5 * eps / steps
    theirs = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    variants = {"ours": lambda: pgd(model, x, y, eps=eps, step_size=alpha, steps=steps),
                "torchattacks": lambda: theirs(x, y)}
    if device.type == "cuda":
        fast = model.to(memory_format=torch.channels_last) if shape[0] > 1 else model
        variants["ours, channels_last + bf16"] = lambda: pgd(fast, x, y, eps=eps, step_size=alpha, steps=steps,
                                                             autocast="bf16", channels_last=True)
    times = {k: [] for k in variants}
    for k, fn in variants.items():  # warm-up (allocator, cudnn autotuning)
        fn()
    for _ in range(args.repeats):
        for k, fn in variants.items():
            times[k].append(timed(fn, device))
    if device.type == "cuda" and shape[0] > 1:
        model.to(memory_format=torch.contiguous_format)
    rows = []
    for k, v in times.items():
        wall, cpu = statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)
        base_wall = statistics.median(t[0] for t in times["torchattacks"])
        base_cpu = statistics.median(t[1] for t in times["torchattacks"])
        rows.append((name, k, wall, base_wall / wall, cpu, base_cpu / cpu))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="default: 16 on CPU, 256 on GPU")
    parser.add_argument("--steps", type=int, default=None, help="default: 5 on CPU, 10 on GPU")
    parser.add_argument("--eps", type=float, default=8 / 255)
    parser.add_argument("--repeats", type=int, default=None, help="default: 3 on CPU, 10 on GPU")
    parser.add_argument("--models", default="resnet-18,lenet-5")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.batch = args.batch or (256 if gpu else 16)
    args.steps = args.steps or (10 if gpu else 5)
    args.repeats = args.repeats or (10 if gpu else 3)
    torch.manual_seed(0)
    shapes = {"resnet-18": (3, 32, 32), "lenet-5": (1, 28, 28)}
    rows = []
    for name in args.models.split(","):
        shape = shapes[name]
        rows += bench(name, registered_model(name, shape), shape, args, device)
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"PGD linf, eps={args.eps:.4g}, {args.steps} steps, batch {args.batch}, median of {args.repeats}; "
          f"{hw}; torch {torch.__version__}")
    print(f"{'model':<10} {'attack':<28} {'wall s':>9} {'ratio':>6} {'cpu s':>9} {'ratio':>6}   "
          "(ratio = torchattacks / this; > 1: faster than torchattacks)")
    for name, variant, wall, wall_ratio, cpu, cpu_ratio in rows:
        print(f"{name:<10} {variant:<28} {wall:>9.4f} {wall_ratio:>6.2f} {cpu:>9.4f} {cpu_ratio:>6.2f}")


if __name__ == "__main__":
    main()
