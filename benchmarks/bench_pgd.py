"""Time deepscope's ``pgd`` and ``apgd`` against torchattacks' PGD and APGD, and the worst-case evaluation.

``--suite pgd,apgd,worst-case`` (default: all three). ``apgd`` times ours against
torchattacks' APGD (CE, one restart) at the same steps. ``worst-case`` times the
``worst-case`` probe's evaluation (APGD-CE, APGD-T, Square; AutoAttack's order,
each attack only on the examples still robust) against the same three attacks run
one by one on every example, ours and torchattacks'; labels are the model's own
predictions, so every example starts correct.

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
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pgd.py --suite apgd,worst-case --models lenet-5
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


def ratio_rows(name, times: dict, base: str) -> list[tuple]:
    rows = []
    base_wall = statistics.median(t[0] for t in times[base])
    base_cpu = statistics.median(t[1] for t in times[base])
    for k, v in times.items():
        wall, cpu = statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)
        rows.append((name, k, wall, base_wall / wall, cpu, base_cpu / cpu))
    return rows


def run_timed(variants: dict, repeats: int, device) -> dict:
    for fn in variants.values():  # warm-up
        fn()
    times = {k: [] for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            times[k].append(timed(fn, device))
    return times


def bench_apgd(name, model, shape, args, device) -> list[tuple]:
    import torchattacks

    from deepscope_standard import apgd

    model = model.to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand((args.batch, *shape), generator=g).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)  # every example starts correct: no early exit for either side
    theirs = torchattacks.APGD(model, eps=args.eps, steps=args.steps, n_restarts=1, loss="ce", seed=0)
    variants = {"ours apgd-ce": lambda: apgd(model, x, y, eps=args.eps, steps=args.steps,
                                             generator=torch.Generator().manual_seed(0)),
                "torchattacks APGD": lambda: theirs(x, y)}
    return ratio_rows(name, run_timed(variants, args.repeats, device), "torchattacks APGD")


def bench_worst_case(name, model, shape, args, device) -> list[tuple]:
    import torchattacks

    from deepscope_standard import apgd, square
    from deepscope_standard.worst_case import evaluate
    from deepscope_standard.worst_case_config import WorstCaseConfig

    model = model.to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand((args.batch, *shape), generator=g).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    cfg = WorstCaseConfig(eps=args.eps, steps=args.steps, target_classes=args.target_classes,
                          queries=args.queries, n_examples=None)
    k = args.target_classes

    def ours_one_by_one():
        gen = torch.Generator().manual_seed(0)
        apgd(model, x, y, eps=args.eps, steps=args.steps, generator=gen)
        apgd(model, x, y, eps=args.eps, steps=args.steps, loss="dlr", target_classes=k, generator=gen)
        square(model, x, y, eps=args.eps, queries=args.queries, generator=gen)

    def theirs_one_by_one():
        torchattacks.APGD(model, eps=args.eps, steps=args.steps, loss="ce", seed=0)(x, y)
        torchattacks.APGDT(model, eps=args.eps, steps=args.steps, n_classes=k + 1, seed=0)(x, y)
        torchattacks.Square(model, eps=args.eps, n_queries=args.queries, p_init=0.8, seed=0)(x, y)

    out = evaluate(model, x, y, cfg, torch.Generator().manual_seed(0))
    print(f"{name}: worst case {out['robust'].float().mean().item():.3f} of {len(y)} examples; attacked "
          f"{out['attacked']}")
    variants = {"worst-case (sequential)": lambda: evaluate(model, x, y, cfg, torch.Generator().manual_seed(0)),
                "ours one by one": ours_one_by_one, "torchattacks one by one": theirs_one_by_one}
    return ratio_rows(name, run_timed(variants, args.repeats, device), "torchattacks one by one")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="default: 16 on CPU, 256 on GPU")
    parser.add_argument("--steps", type=int, default=None, help="default: 5 on CPU, 10 on GPU")
    parser.add_argument("--eps", type=float, default=8 / 255)
    parser.add_argument("--repeats", type=int, default=None, help="default: 3 on CPU, 10 on GPU")
    parser.add_argument("--models", default="resnet-18,lenet-5")
    parser.add_argument("--suite", default="pgd,apgd,worst-case")
    parser.add_argument("--target-classes", type=int, default=3, help="worst-case: APGD-T's target classes")
    parser.add_argument("--queries", type=int, default=100, help="worst-case: Square's queries")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.batch = args.batch or (256 if gpu else 16)
    args.steps = args.steps or (10 if gpu else 5)
    args.repeats = args.repeats or (10 if gpu else 3)
    torch.manual_seed(0)
    shapes = {"resnet-18": (3, 32, 32), "lenet-5": (1, 28, 28)}
    suites = {"pgd": bench, "apgd": bench_apgd, "worst-case": bench_worst_case}
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    for suite in args.suite.split(","):
        rows = []
        for name in args.models.split(","):
            shape = shapes[name]
            rows += suites[suite](name, registered_model(name, shape), shape, args, device)
        extra = f", APGD-T {args.target_classes} classes, Square {args.queries} queries" if suite == "worst-case" else ""
        print(f"{suite}: linf, eps={args.eps:.4g}, {args.steps} steps{extra}, batch {args.batch}, median of "
              f"{args.repeats}; {hw}; torch {torch.__version__}")
        print(f"{'model':<10} {'attack':<28} {'wall s':>9} {'ratio':>6} {'cpu s':>9} {'ratio':>6}   "
              "(ratio = torchattacks / this; > 1: faster than torchattacks)")
        for name, variant, wall, wall_ratio, cpu, cpu_ratio in rows:
            print(f"{name:<10} {variant:<28} {wall:>9.4f} {wall_ratio:>6.2f} {cpu:>9.4f} {cpu_ratio:>6.2f}")


if __name__ == "__main__":
    main()
