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
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "standard"))

from deepscope_standard.attacks import pgd  # noqa: E402


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """The standard CIFAR ResNet-18: 3x3 stem without max-pool, [2, 2, 2, 2] basic blocks."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1))


def lenet5(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84),
                         nn.ReLU(), nn.Linear(84, classes))


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
    models = {"resnet-18": (ResNet18, (3, 32, 32)), "lenet-5": (lenet5, (1, 28, 28))}
    rows = []
    for name in args.models.split(","):
        build, shape = models[name]
        rows += bench(name, build(), shape, args, device)
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"PGD linf, eps={args.eps:.4g}, {args.steps} steps, batch {args.batch}, median of {args.repeats}; "
          f"{hw}; torch {torch.__version__}")
    print(f"{'model':<10} {'attack':<28} {'wall s':>9} {'ratio':>6} {'cpu s':>9} {'ratio':>6}   "
          "(ratio = torchattacks / this; > 1: faster than torchattacks)")
    for name, variant, wall, wall_ratio, cpu, cpu_ratio in rows:
        print(f"{name:<10} {variant:<28} {wall:>9.4f} {wall_ratio:>6.2f} {cpu:>9.4f} {cpu_ratio:>6.2f}")


if __name__ == "__main__":
    main()
