"""Scattering front-end cost: our ScatteringFrontEnd vs kymatio's Scattering2D alone, and the full model.

Prints, for a batch of 32x32 images:
- forward time of kymatio's ScatteringTorch2D alone and of our front-end (the same scattering
  plus reshape, Gaussian noise and BatchNorm), and their ratio (our overhead);
- forward+backward (input gradient, as an attack needs) per image for the front-end and for the
  whole `scatternet` model with its default back-end.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_scatternet_frontend.py [--device cuda] [--batch 128]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)

    from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

    from deepscope_scatternet.configs import ScatterNetConfig
    from deepscope_scatternet.scattering import ScatteringFrontEnd, build_scatternet
    from deepscope import DatasetInfo

    c, size = args.channels, 32
    torch.manual_seed(0)
    x = torch.rand(args.batch, c, size, size, device=device)
    kymatio = ScatteringTorch2D(J=2, shape=(size, size), L=8, max_order=2).to(device)
    front = ScatteringFrontEnd((c, size, size), J=2, L=8, max_order=2, noise_std=0.1).to(device).eval()
    info = DatasetInfo("bench", 10, (c, size, size), (0.5,) * c, (0.25,) * c)
    model = build_scatternet(ScatterNetConfig(noise_std=0.1), info).to(device).eval()

    def forward(module):
        def run():
            with torch.no_grad():
                module(x)
        return run

    def forward_backward(module):
        def run():
            xg = x.detach().requires_grad_(True)
            torch.autograd.grad(module(xg).sum(), xg)
        return run

    rows = [
        ("kymatio Scattering2D forward", timed(forward(kymatio), args.repeats, device)),
        ("our front-end forward", timed(forward(front), args.repeats, device)),
        ("kymatio Scattering2D fwd+bwd", timed(forward_backward(kymatio), args.repeats, device)),
        ("our front-end fwd+bwd", timed(forward_backward(front), args.repeats, device)),
        ("scatternet model fwd+bwd", timed(forward_backward(model), args.repeats, device)),
    ]
    print(f"device={device} batch={args.batch} input={c}x{size}x{size} J=2 L=8 order=2 "
          f"threads={torch.get_num_threads()} repeats={args.repeats} (median)")
    print(f"{'what':34s} {'batch ms':>10s} {'ms/image':>10s}")
    for name, seconds in rows:
        print(f"{name:34s} {seconds * 1e3:10.1f} {seconds * 1e3 / args.batch:10.3f}")
    t = dict(rows)
    print(f"overhead ratio forward (ours / kymatio): "
          f"{t['our front-end forward'] / t['kymatio Scattering2D forward']:.3f}")
    print(f"overhead ratio fwd+bwd (ours / kymatio): "
          f"{t['our front-end fwd+bwd'] / t['kymatio Scattering2D fwd+bwd']:.3f}")
    print(f"back-end share of the model's fwd+bwd: "
          f"{1 - t['our front-end fwd+bwd'] / t['scatternet model fwd+bwd']:.2f}")


if __name__ == "__main__":
    main()
