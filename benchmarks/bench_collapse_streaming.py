"""Streaming NC1 (projected scatter, O(C d) memory) vs the reference's dense trace(Sw @ pinv(Sb)).

    OMP_NUM_THREADS=1 python benchmarks/bench_collapse_streaming.py [--n 10000] [--d 512] [--classes 10]

The dense side is the robust_neural_collapse formula (Sw accumulated as a d x d
matrix batch by batch, then scipy.linalg.pinv(Sb)); both see the same float32
features in batches of 500. Prints both times, the ratio and the NC1 values.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.linalg
import torch

from deepscope_collapse.metrics import MeanAccumulator, ScatterAccumulator, collapse_metrics


def features(n, d, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    h = 3 * torch.randn(c, d, generator=g)[y] + torch.randn(n, d, generator=g)
    return h, y


def streaming_nc1(h, y, c, batch):
    means = MeanAccumulator(c)
    for s in range(0, len(h), batch):
        means.update(h[s:s + batch], y[s:s + batch])
    scat = ScatterAccumulator(means)
    for s in range(0, len(h), batch):
        scat.update(h[s:s + batch], y[s:s + batch])
    return collapse_metrics(means, scat, divide_by_classes=False)["nc1"]


def dense_nc1(h, y, c, batch):
    h64 = h.double()
    sums = torch.zeros(c, h.shape[1], dtype=torch.float64)
    sums.index_add_(0, y, h64)
    counts = torch.bincount(y, minlength=c).double()
    mu = sums / counts[:, None]
    mu_g = sums.sum(0) / counts.sum()
    sw = torch.zeros(h.shape[1], h.shape[1], dtype=torch.float64)
    for s in range(0, len(h), batch):
        r = h64[s:s + batch] - mu[y[s:s + batch]]
        sw += r.T @ r
    sw /= len(h)
    m = (mu - mu_g).T.numpy()
    sb = m @ m.T / c
    return float(np.trace(sw.numpy() @ scipy.linalg.pinv(sb)))


def best_of(fn, repeats=3):
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=500)
    a = parser.parse_args()
    h, y = features(a.n, a.d, a.classes)
    t_stream, v_stream = best_of(lambda: streaming_nc1(h, y, a.classes, a.batch))
    t_dense, v_dense = best_of(lambda: dense_nc1(h, y, a.classes, a.batch))
    print(f"N={a.n} d={a.d} C={a.classes} batch={a.batch} threads={torch.get_num_threads()}")
    print(f"streaming (projected, C x d state): {t_stream * 1e3:8.1f} ms  NC1 = {v_stream:.6f}")
    print(f"dense reference (d x d Sw + pinv):  {t_dense * 1e3:8.1f} ms  NC1 = {v_dense:.6f}")
    print(f"ratio dense / streaming: {t_dense / t_stream:.2f}x; state floats {a.classes * a.d} vs {a.d * a.d} "
          f"({a.d / a.classes:.0f}x less); relative NC1 difference {abs(v_stream - v_dense) / v_dense:.1e}")


if __name__ == "__main__":
    main()
