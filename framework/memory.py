"""The peak memory an autograd graph holds, measured the same way on any device.

CUDA has ``max_memory_allocated``; a CPU has nothing as precise per step. ``SavedTensorMeter``
counts the bytes of every tensor autograd saves for the backward pass, while it is alive, and keeps
the peak: what an unrolled inner loop (RaT-BPTT's window, MTT's synthetic steps) costs, and whether
it grows with the unroll. Shared storage is counted once per saved tensor, so it is an upper bound.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class SavedTensorMeter:
    """``with meter.track(): ...`` counts the graph's saved tensors; ``meter.peak`` is the most held at once."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20

    @contextmanager
    def track(self) -> Iterator["SavedTensorMeter"]:
        import torch

        meter = self

        class Saved:
            __slots__ = ("tensor", "size", "__weakref__")

            def __init__(self, tensor):
                self.tensor, self.size = tensor, tensor.numel() * tensor.element_size()
                meter.live += self.size
                meter.peak = max(meter.peak, meter.live)

            def __del__(self):
                meter.live -= self.size

        with torch.autograd.graph.saved_tensors_hooks(Saved, lambda saved: saved.tensor):
            yield self


def time_and_peak_memory(fn, device, repeats: int, *args) -> tuple[float, float, float]:
    """Call ``fn(*args)`` ``repeats`` times: (median wall s, median process CPU s, peak MB). The peak is
    CUDA's ``max_memory_allocated`` on a GPU, the autograd graph's saved tensors elsewhere."""
    import statistics
    import time

    import torch

    walls, cpus, peak = [], [], 0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        meter = SavedTensorMeter()
        wall, cpu = time.perf_counter(), time.process_time()
        if device.type == "cuda":
            fn(*args)
            torch.cuda.synchronize()
            peak = max(peak, torch.cuda.max_memory_allocated(device))
        else:
            with meter.track():
                fn(*args)
            peak = max(peak, meter.peak)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), peak / 2**20
