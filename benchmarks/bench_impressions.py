"""Supermask training and task inference: deepscope-impressions against plain reference-style modules.

    OMP_NUM_THREADS=1 python benchmarks/bench_impressions.py [--n 5000] [--tasks 10] [--k 5] [--device cpu]

1. Time per task (one epoch over n synthetic 784-d examples, FC 784-300-300-10, batch 128):
   - SupSup: ours (top-k by torch.topk, straight-through) against a plain re-implementation of RAIVNLab's
     MultitaskMaskLinear (GetSubnet by a full sort of the scores, every forward);
   - ImpressLearn (alphas over k frozen masks): ours (basis masks cached, recomputed only when their scores
     change) against the plain fork-style basis layer (every basis mask re-derived by a sort every forward).
2. Task inference on a batch of 128: SupSup's one-shot (one forward/backward through the superposition of
   T masks) against T separate forward passes (min entropy).
Each timing is the best of --repeats; ratios are reference / ours (> 1: ours is faster).
"""

from __future__ import annotations

import argparse
import math
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from deepscope_impressions.configs import SupermaskMLPConfig
from deepscope_impressions.probes import infer_min_entropy, infer_oneshot
from deepscope_impressions.supermask import make_mlp


# ----------------------------------------------------------------- the plain reference-style modules


class SortSubnet(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, density):
        out = scores.clone()
        _, idx = scores.flatten().sort()
        j = int((1 - density) * scores.numel())
        flat = out.flatten()
        flat[idx[:j]] = 0
        flat[idx[j:]] = 1
        return out

    @staticmethod
    def backward(ctx, g):
        return g, None


class PlainMaskLinear(nn.Linear):
    """One score tensor per task; the mask of |scores| re-derived by a sort in every forward."""

    def __init__(self, fan_in, fan_out, tasks, density=0.5):
        super().__init__(fan_in, fan_out, bias=False)
        self.density, self.task, self.alphas, self.basis = density, 0, None, None
        self.scores = nn.ParameterList(nn.Parameter(torch.empty(fan_out, fan_in)) for _ in range(tasks))
        for s in self.scores:
            nn.init.kaiming_uniform_(s, a=math.sqrt(5))
        self.weight.requires_grad = False
        with torch.no_grad():
            self.weight.copy_(self.weight.sign() * math.sqrt(2) / math.sqrt(fan_in))

    def forward(self, x):
        if self.alphas is not None:  # fork-style basis layer: sum_i alpha_i GetSubnet(|S_i|)
            mask = sum(a * SortSubnet.apply(self.scores[i].abs(), self.density) for a, i in zip(self.alphas, self.basis))
        else:
            mask = SortSubnet.apply(self.scores[self.task].abs(), self.density)
        return F.linear(x, self.weight * mask)


class PlainFC(nn.Module):
    def __init__(self, tasks):
        super().__init__()
        self.layers = nn.ModuleList([PlainMaskLinear(784, 300, tasks), PlainMaskLinear(300, 300, tasks),
                                     PlainMaskLinear(300, 10, tasks)])

    def forward(self, x):
        x = x.flatten(1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            x = F.relu(x) if i < 2 else x
        return x


# ----------------------------------------------------------------- timing


def epoch(model, params, x, y, batch=128):
    opt = torch.optim.RMSprop(params, lr=1e-4)
    for s in range(0, len(x), batch):
        loss = F.cross_entropy(model(x[s:s + batch]), y[s:s + batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def freeze(model, params):
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.n, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (args.n,), device=dev)
    info = SimpleNamespace(num_tasks=args.tasks, num_inputs=784, num_classes=10)
    ours = make_mlp(SupermaskMLPConfig(widths=[300, 300], selection="topk-abs"), info).to(dev)
    plain = PlainFC(args.tasks).to(dev)
    basis = list(range(args.k))

    ours.set_task(args.k)
    ours.use_mask(args.k)
    t_ours = best_of(lambda: epoch(ours, freeze(ours, ours.slot_params(args.k)), x, y), args.repeats)
    for layer in plain.layers:
        layer.task = args.k
    t_plain = best_of(lambda: epoch(plain, freeze(plain, [l.scores[args.k] for l in plain.layers]), x, y),
                      args.repeats)

    ours.use_basis(args.k, basis)
    t_ours_alpha = best_of(lambda: epoch(ours, freeze(ours, ours.alpha_params(args.k)), x, y), args.repeats)
    alphas = [torch.full((args.k,), 1.0 / args.k, device=dev, requires_grad=True) for _ in plain.layers]
    for layer, a in zip(plain.layers, alphas):
        layer.alphas, layer.basis = a, basis
    t_plain_alpha = best_of(lambda: epoch(plain, freeze(plain, []) + alphas, x, y), args.repeats)

    ours.eval()
    xb = x[:128]
    learned = list(range(args.tasks))
    t_oneshot = best_of(lambda: infer_oneshot(ours, ours, xb, learned), args.repeats + 1)
    t_separate = best_of(lambda: infer_min_entropy(ours, ours, xb, learned), args.repeats + 1)

    print(f"device {dev}, n {args.n}, tasks {args.tasks}, k {args.k}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"supsup epoch      : ours {t_ours:.3f} s, plain sort-per-forward {t_plain:.3f} s, "
          f"ratio {t_plain / t_ours:.2f}")
    print(f"impress epoch (k) : ours {t_ours_alpha:.3f} s, plain basis layer {t_plain_alpha:.3f} s, "
          f"ratio {t_plain_alpha / t_ours_alpha:.2f}")
    print(f"task inference    : one-shot superposition {t_oneshot * 1e3:.1f} ms, {args.tasks} separate forwards "
          f"{t_separate * 1e3:.1f} ms, ratio {t_separate / t_oneshot:.2f}")


if __name__ == "__main__":
    main()
