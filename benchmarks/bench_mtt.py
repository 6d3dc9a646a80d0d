"""One MTT iteration: deepscope-galaxy's flat unroll (with and without activation checkpointing)
against a plain re-implementation of the official ``distill.py`` loop on the same network.

The peer is what the official code does (it is not a package): a ``ReparamModule``-style copy of the
network whose parameters are views of one flat vector set before every forward, a Python list
``student_params`` that grows by ``student_params[-1] - syn_lr * grad`` (``create_graph=True``) at
each of the N steps, the summed squared distances divided by the parameter count, their ratio, and
``backward()`` to the images and ``syn_lr``. Same initial weights, start and target vectors, batches
and lr for both; DSA is off in both (it is the same code either way), and the benchmark checks that
the losses and gradients agree before timing. Reported: median seconds per iteration (and CPU
seconds), the ratio theirs / ours (> 1: ours is faster), and peak memory: CUDA's
max_memory_allocated on a GPU, and on CPU the peak bytes the autograd graph holds (every saved tensor
while alive), at N = 20 and 50, so that its growth in N shows; ``ckpt`` is ours with
``checkpoint_unroll`` (each step's activations recomputed in the backward pass).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_mtt.py                      # CPU: ConvNet-3 w32, 28x28x1, IPC 1
    .venv/bin/python benchmarks/bench_mtt.py --device cuda --width 128 --channels 3 --side 32 --ipc 10
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

from deepscope import time_and_peak_memory
from deepscope_galaxy.matching import matching_loss, unroll
from deepscope_standard import flatten_params


def registered_body(args) -> torch.nn.Module:
    from deepscope import DatasetInfo, build_network, get_host, structure_component

    info = DatasetInfo("bench", 10, (args.channels, args.side, args.side), (0.5,) * args.channels,
                       (0.25,) * args.channels)
    table = {"use": "convnet", "width": args.width, "depth": 3, "norm": args.norm}
    spec, issues = structure_component(get_host().registry, "model", table, "bench")
    assert not issues, issues
    return build_network(spec, info).body


class ReparamModule:
    """The official flat-parameter module: parameters replaced by views of one vector before each call."""

    def __init__(self, module: torch.nn.Module):
        self.module = copy.deepcopy(module)
        self.slots = []
        for _, m in self.module.named_modules():
            for name, p in list(m.named_parameters(recurse=False)):
                self.slots.append((m, name, p.shape, p.numel()))
                delattr(m, name)
                setattr(m, name, p.detach())

    def __call__(self, x, flat_param):
        offset = 0
        for m, name, shape, n in self.slots:
            setattr(m, name, flat_param[offset:offset + n].view(shape))
            offset += n
        return self.module(x)


def make_problem(args, body, device):
    g = torch.Generator().manual_seed(0)
    like = {k: v.detach() for k, v in body.named_parameters()}
    start = flatten_params(like).clone().to(device)
    target = (start + 0.01 * torch.randn(start.shape, generator=g).to(device))
    images = torch.randn(10 * args.ipc, args.channels, args.side, args.side, generator=g).to(device)
    labels = torch.arange(10).repeat_interleave(args.ipc).to(device)
    batches = [torch.randperm(len(labels), generator=g).to(device) for _ in range(max(args.steps))]
    return like, start, target, images, labels, batches


def ours(body, problem, steps, lr0, checkpoint):
    like, start, target, images, labels, batches = problem
    images = images.clone().requires_grad_()
    lr = torch.tensor(lr0, device=images.device, requires_grad=True)
    final = unroll(body, like, start, images, labels, lr, batches[:steps], checkpoint=checkpoint)
    loss = matching_loss(final, start, target)
    loss.backward()
    return loss.detach(), images.grad, lr.grad


def theirs(net, problem, steps, lr0):
    _, start, target, images, labels, batches = problem
    images = images.clone().requires_grad_()
    syn_lr = torch.tensor(lr0, device=images.device, requires_grad=True)
    student_params = [start.clone().requires_grad_(True)]
    for step in range(steps):
        idx = batches[step]
        ce = F.cross_entropy(net(images[idx], flat_param=student_params[-1]), labels[idx])
        grad = torch.autograd.grad(ce, student_params[-1], create_graph=True)[0]
        student_params.append(student_params[-1] - syn_lr * grad)
    num_params = start.numel()
    param_loss = F.mse_loss(student_params[-1], target, reduction="sum") / num_params
    param_dist = F.mse_loss(start, target, reduction="sum") / num_params
    loss = param_loss / param_dist
    loss.backward()
    return loss.detach(), images.grad, syn_lr.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--norm", choices=["instance", "batch", "none"], default="instance")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--side", type=int, default=28)
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    body = registered_body(args).to(device).train()
    problem = make_problem(args, body, device)
    net = ReparamModule(body)
    print(f"convnet-3 width {args.width} ({args.norm} norm), {args.channels}x{args.side}x{args.side}, "
          f"{10 * args.ipc} synthetic images, {start_size(problem)} parameters, device {device}")
    print(f"{'N':>4} {'ours s':>8} {'ckpt s':>8} {'official s':>10} {'ratio':>6} {'ours cpu':>9} {'offic cpu':>9} "
          f"{'ours MB':>8} {'ckpt MB':>8} {'offic MB':>9} {'max rel diff':>12}")
    for steps in args.steps:
        a, b, c = ours(body, problem, steps, args.lr, False), ours(body, problem, steps, args.lr, True), \
            theirs(net, problem, steps, args.lr)
        rel = max(((x - y).abs().max() / y.abs().max()).item() for u in (a, b) for x, y in zip(u, c))
        if rel > 1e-4:
            raise SystemExit(f"the losses or gradients disagree (relative {rel:.2e}): not timing different things")
        mine = time_and_peak_memory(ours, device, args.repeats, body, problem, steps, args.lr, False)
        ckpt = time_and_peak_memory(ours, device, args.repeats, body, problem, steps, args.lr, True)
        peer = time_and_peak_memory(theirs, device, args.repeats, net, problem, steps, args.lr)
        print(f"{steps:>4} {mine[0]:>8.3f} {ckpt[0]:>8.3f} {peer[0]:>10.3f} {peer[0] / mine[0]:>6.2f} {mine[1]:>9.3f} "
              f"{peer[1]:>9.3f} {mine[2]:>8.1f} {ckpt[2]:>8.1f} {peer[2]:>9.1f} {rel:>12.1e}")


def start_size(problem) -> int:
    return int(problem[1].numel())


if __name__ == "__main__":
    main()
