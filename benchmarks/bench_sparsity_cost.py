"""Cost of effective masks and SynFlow relative to one dense forward+backward pass.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sparsity_cost.py [--batch 128] [--synflow-iterations 10]

For VGG-19 (BN, one linear classifier) and ResNet-18 (CIFAR stem, torchvision's
blocks) on 3x32x32 inputs it times, in one run:
- one dense forward+backward of a training batch (cross-entropy, float32): the unit;
- building the linearized float64 copy, and one effective-mask evaluation;
- the effective-target search (bisection) for random pruning at compression 100;
- SynFlow pruning to compression 100 with ``--synflow-iterations`` iterations
  (default 10 to fit a shared 2-core CPU; the ratio per iteration and its
  extrapolation to SynFlow's default 100 iterations are printed).
and prints each as a ratio to the unit. Models are defined here so the script
needs only torch, torchvision and this plugin.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch
import torchvision
from torch import nn

from deepscope_sparsity import pruners as P
from deepscope_sparsity.configs import RandomPrunerConfig, SynflowPrunerConfig
from deepscope_sparsity.effective import EffectiveMasks, count_kept
from deepscope_sparsity.effective_target import prune_effective
from deepscope import DataBundle, DatasetInfo, Network, RunState

VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def vgg19(classes=10):
    layers, cin = [], 3
    for v in VGG19:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            cin = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, classes))


def resnet18(classes=10):
    net = torchvision.models.resnet18(num_classes=classes)
    net.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def state_for(body):
    info = DatasetInfo("cifar-shaped", 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3)
    data = DataBundle(None, None, info)
    model = Network(body, info.mean, info.std)
    return RunState(pipeline=SimpleNamespace(run=SimpleNamespace(seed=0)), host=None,
                    device=torch.device("cpu"), data=data, model=model)


def timed(fn, repeats=1):
    times = []
    result = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def bench(name, body, batch, iterations):
    state = state_for(body)
    n = sum(p.numel() for p in state.prunable().values())
    x = torch.rand(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))

    def dense_step():
        state.model.zero_grad()
        nn.functional.cross_entropy(state.model(x), y).backward()

    dense_step()  # warm-up
    unit, _ = timed(dense_step, repeats=2)
    build, effective = timed(lambda: EffectiveMasks(state.model, (3, 32, 32)))
    masks = P.RandomPruner(RandomPrunerConfig(compression=100)).prune(state, None, 0.01)
    effective(masks)  # warm-up
    one, eff = timed(lambda: effective(masks), repeats=2)
    search, found = timed(lambda: prune_effective(P.RandomPruner(RandomPrunerConfig(compression=100)),
                                                  state, None, 0.01))
    synflow, smasks = timed(lambda: P.SynflowPruner(SynflowPrunerConfig(compression=100, iterations=iterations))
                            .prune(state, None, 0.01))
    print(f"\n{name}: {n:,} prunable weights; unit = one dense forward+backward, batch {batch}, float32: "
          f"{unit * 1e3:.1f} ms")
    print(f"  build linearized float64 copy        {build * 1e3:9.1f} ms  ratio {build / unit:8.2f}")
    print(f"  one effective-mask evaluation        {one * 1e3:9.1f} ms  ratio {one / unit:8.2f}")
    print(f"  effective search, random c=100       {search * 1e3:9.1f} ms  ratio {search / unit:8.2f}"
          f"  (direct compression {n / count_kept(found):.1f})")
    print(f"  SynFlow c=100, {iterations:3d} iterations        {synflow * 1e3:9.1f} ms  ratio {synflow / unit:8.2f}"
          f"  (per iteration {synflow / iterations / unit:.3f}; 100 iterations ~ {100 * synflow / iterations / unit:.1f})")
    print(f"  random c=100: effective compression {n / max(count_kept(eff), 1):.1f}; "
          f"SynFlow c=100: effective compression {n / max(count_kept(effective(smasks)), 1):.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--synflow-iterations", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU")
    bench("VGG-19", vgg19(), args.batch, args.synflow_iterations)
    bench("ResNet-18", resnet18(), args.batch, args.synflow_iterations)


if __name__ == "__main__":
    main()
