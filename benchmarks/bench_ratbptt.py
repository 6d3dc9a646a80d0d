"""One RaT-BPTT meta-step: deepscope's functional unroll against a `higher` unroll of the same network.

Both do what the official code does per meta-step: ``start`` plain inner steps, ``window``
differentiable ones on synthetic batches, the cross-entropy on a real batch, its gradient with
respect to the synthetic images. `higher` (0.2.1, the official code's dependency) is a
benchmark-only dependency: ``pip install higher==0.2.1``. Same initial weights, same batches, same
optimizer and a seeded network. Before timing, the benchmark checks that the two unrolls give
the same meta-gradient (to float32 rounding, 1e-4) with an inner SGD (momentum 0.9, weight decay
5e-4) and with Adam. For Adam the check runs ours with ``inner_adam_eps = "higher"``: higher's
DifferentiableAdam adds eps to sqrt(v) before the bias correction, p - lr sqrt(1 - b2^t) / (1 - b1^t)
m / (sqrt(v) + eps), where ``torch.optim.Adam`` (the official code's prefix) and our default add it
after (32x smaller at step 1). The column "Adam, torch eps" prints how far our default is from the
official window. The timed runs use our default and higher unchanged.

Two comparisons are timed. "ours" against "higher": the same operations (the prefix's batches
detached, no augmentation), which isolates the unroll. "ours+aug" against "official": the meta-step
as each code runs it, with flip-or-rotate on every inner batch and on the real batch; the official
code's prefix also backpropagates into the synthetic images (see :func:`theirs`), and its
augmentation builds rotations image by image (:func:`official_flip_rotate`). Reported: the
median seconds per meta-step (and CPU seconds on CPU), the ratio theirs / ours (> 1: ours is
faster), and the peak memory: CUDA's max_memory_allocated on a GPU, and on CPU the peak bytes the
autograd graph holds (every saved tensor, counted while alive), at two unroll lengths to show it
flat in T at a fixed window.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ratbptt.py                 # CPU: MLP, W 10, T 20/60
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ratbptt.py --inner sgd     # the same, timing SGD
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ratbptt.py --model convnet --width 32 --norm none
    .venv/bin/python benchmarks/bench_ratbptt.py --device cuda                    # the CIFAR-10 settings:
        # ConvNet-3 w128 instance norm, 32x32x3, 100 images, W 60, T 200 (and 100), real batch 5000
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
import torch.nn.functional as F

from deepscope import time_and_peak_memory
from deepscope_ratbptt.unroll import InnerOptimizer, unroll
from deepscope_standard import flip_rotate


def registered_body(args) -> torch.nn.Module:
    from deepscope import DatasetInfo, build_network, get_host, structure_component

    shape = (args.channels, args.side, args.side)
    info = DatasetInfo("bench", 10, shape, (0.5,) * args.channels, (0.25,) * args.channels)
    table = {"use": "mlp", "widths": [args.width]} if args.model == "mlp" else \
        {"use": "convnet", "width": args.width, "depth": 3, "norm": args.norm}
    spec, issues = structure_component(get_host().registry, "model", table, "bench")
    assert not issues, issues
    return build_network(spec, info).body


def make_problem(args, device):
    g = torch.Generator().manual_seed(0)
    shape = (args.channels, args.side, args.side)
    x_syn = torch.randn(10 * args.ipc, *shape, generator=g).to(device).requires_grad_()
    y_syn = torch.arange(10).repeat_interleave(args.ipc).to(device)
    x_real = torch.randn(args.real_batch, *shape, generator=g).to(device)
    y_real = torch.randint(0, 10, (args.real_batch,), generator=g).to(device)
    draws = [torch.randperm(len(y_syn), generator=g)[:10 * args.batch_per_class].to(device)
             for _ in range(max(args.unrolls))]
    return x_syn, y_syn, x_real, y_real, draws


def ours(body, init, problem, start, window, lr, kind="adam", augment=False, adam_eps="torch"):
    """deepscope's meta-step: detached prefix batches, then the functional window; with ``augment``,
    the distiller's batched flip-or-rotate on every inner batch and on the real batch; ``adam_eps`` as
    the distiller's ``inner_adam_eps``."""
    x_syn, y_syn, x_real, y_real, draws = problem
    body.load_state_dict(init)
    calls = iter(draws)
    generator = torch.Generator().manual_seed(1)
    aug = (lambda x: flip_rotate(x, generator)) if augment else (lambda x: x)

    def batches(differentiable):
        idx = next(calls)
        return aug((x_syn if differentiable else x_syn.detach())[idx]), y_syn[idx]

    optimizer = InnerOptimizer(kind, lr, momentum=0.9, weight_decay=5e-4, adam_eps=adam_eps)
    final = unroll(body, dict(body.named_parameters()), optimizer, batches, start=start, window=window)
    loss = F.cross_entropy(torch.func.functional_call(body, final, (aug(x_real),)), y_real)
    return torch.autograd.grad(loss, x_syn)[0]


def official_flip_rotate(x: torch.Tensor, rng: np.random.RandomState) -> torch.Tensor:
    """The official augmentation's cost structure (its ``flip_rotate`` strategy): one of flip or rotate
    per call from numpy draws; a rotation's matrices are assembled image by image from 0-d tensors,
    and its sampling grid is built on the CPU and then copied to the images' device."""
    n = x.shape[0]
    if rng.randint(2) == 0:
        coin = torch.tensor(rng.rand(n, 1, 1, 1), dtype=torch.float32).to(x.device)
        return torch.where(coin < 0.5, x.flip(3), x)
    angles = torch.tensor(rng.rand(n) - 0.5, dtype=torch.float32) * 2 * math.radians(15)
    theta = torch.tensor([[[torch.cos(a), -torch.sin(a), 0], [torch.sin(a), torch.cos(a), 0]] for a in angles])
    grid = F.affine_grid(theta, list(x.shape), align_corners=False).to(x.device)
    return F.grid_sample(x, grid, align_corners=False)


def theirs(body, init, problem, start, window, lr, kind="adam", official=False, exact_step=False):
    """A torch.optim prefix, then higher.innerloop_ctx for the window, as the official code.

    ``official`` runs the meta-step as the official code writes it: its prefix's ``loss.backward()``
    also reaches the synthetic images (they are read from an ``nn.Embedding`` that requires grad; the
    training loop zeroes that gradient before the meta-gradient), and every batch goes through
    :func:`official_flip_rotate`. Without it, the prefix batches are detached and nothing is
    augmented: the same operations as :func:`ours` without ``augment``. ``exact_step`` (the check
    only) hands higher the prefix's step count as an int: torch.optim keeps it in a float32 tensor,
    and higher's bias corrections computed from it lose about five digits (8.7e-4 relative in the
    ConvNet's meta-gradient at T = 10), which is not what the check is about.
    """
    import higher

    x_syn, y_syn, x_real, y_real, draws = problem
    body.load_state_dict(init)
    rng = np.random.RandomState(1)
    aug = (lambda x: official_flip_rotate(x, rng)) if official else (lambda x: x)
    opt = torch.optim.Adam(body.parameters(), lr=lr) if kind == "adam" else \
        torch.optim.SGD(body.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    prefix_images = x_syn if official else x_syn.detach()
    for i in range(start):
        opt.zero_grad()
        F.cross_entropy(body(aug(prefix_images[draws[i]])), y_syn[draws[i]]).backward()
        opt.step()
    x_syn.grad = None
    if exact_step:
        for state in opt.state.values():
            state["step"] = int(state["step"])
    with higher.innerloop_ctx(body, opt, copy_initial_weights=True) as (fnet, diffopt):
        for i in range(start, start + window):
            diffopt.step(F.cross_entropy(fnet(aug(x_syn[draws[i]])), y_syn[draws[i]]))
        loss = F.cross_entropy(fnet(aug(x_real)), y_real)
        return torch.autograd.grad(loss, x_syn)[0]


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", choices=["mlp", "convnet"], default="mlp")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--norm", choices=["instance", "batch", "none"], default="instance")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--side", type=int, default=28)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--batch-per-class", type=int, default=10)
    parser.add_argument("--real-batch", type=int, default=256)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--unrolls", type=int, nargs="+", default=[20, 60])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--inner", choices=["adam", "sgd"], default="adam",
                        help="the timed inner optimizer (adam: the official commands'; both are checked)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preset", choices=["auto", "small", "cifar10"], default="auto",
                        help="cifar10: the official CIFAR-10 IPC 10 settings (the default on cuda); small: the "
                             "flags as given (the default on cpu)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.preset == "cifar10" or (args.preset == "auto" and device.type == "cuda"):
        args.model, args.width, args.norm, args.channels, args.side = "convnet", 128, "instance", 3, 32
        args.window, args.unrolls, args.real_batch, args.ipc, args.batch_per_class = 60, [100, 200], 5000, 10, 10
    try:
        import higher  # noqa: F401
    except ImportError:
        raise SystemExit("bench_ratbptt needs the peer: pip install higher==0.2.1 (a benchmark-only dependency)")
    torch.manual_seed(0)
    body = registered_body(args).to(device).train()
    init = {k: v.clone() for k, v in body.state_dict().items()}
    problem = make_problem(args, device)
    print(f"{args.model} width {args.width} ({args.norm if args.model == 'convnet' else 'no norm'}), "
          f"{10 * args.ipc} synthetic, real batch {args.real_batch}, window {args.window}, inner {args.inner}, "
          f"device {device}")
    print(f"{'T':>5} {'ours s':>8} {'higher s':>9} {'ratio':>6} {'ours cpu':>9} {'higher cpu':>10} "
          f"{'ours MB':>8} {'higher MB':>9} {'SGD |dg|/|g|':>13} {'Adam':>8} {'Adam, torch eps':>16}  "
          f"{'ours+aug s':>10} {'official s':>10} {'ratio':>6} {'ours+aug cpu':>12} {'official cpu':>12}")
    for total in args.unrolls:
        start = total - args.window
        run = (body, init, problem, start, args.window, args.lr)
        rel_sgd = relative_difference(ours(*run, "sgd"), theirs(*run, "sgd"))
        rel_adam = relative_difference(ours(*run, adam_eps="higher"), theirs(*run, exact_step=True))
        if max(rel_sgd, rel_adam) > 1e-4:
            raise SystemExit(f"the meta-gradients disagree (relative {rel_sgd:.2e} with SGD, {rel_adam:.2e} with "
                             "Adam, inner_adam_eps = 'higher'): not timing the same unroll")
        rel = relative_difference(ours(*run), theirs(*run))
        kind = args.inner
        timed = {name: time_and_peak_memory(fn, device, args.repeats, *run, *extra)
                 for name, fn, extra in [("ours", ours, (kind,)), ("higher", theirs, (kind,)),
                                         ("ours+aug", ours, (kind, True)), ("official", theirs, (kind, True))]}
        mine, peer, mine_aug, official = (timed[k] for k in ("ours", "higher", "ours+aug", "official"))
        print(f"{total:>5} {mine[0]:>8.3f} {peer[0]:>9.3f} {peer[0] / mine[0]:>6.2f} {mine[1]:>9.3f} {peer[1]:>10.3f} "
              f"{mine[2]:>8.1f} {peer[2]:>9.1f} {rel_sgd:>13.1e} {rel_adam:>8.1e} {rel:>16.1e}  "
              f"{mine_aug[0]:>10.3f} {official[0]:>10.3f} {official[0] / mine_aug[0]:>6.2f} {mine_aug[1]:>12.3f} "
              f"{official[1]:>12.3f}")

if __name__ == "__main__":
    main()
