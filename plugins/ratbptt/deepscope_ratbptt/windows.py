"""Where each meta-step's window of differentiable steps starts, in an unroll of T inner steps.

The official code's ``cctype``: 2 draws ``random.randint(0, T - W)`` (both ends included) once per
pass over the real loader (``random-per-epoch``; with ``--complete_random`` every meta-step:
``random``); 0 fixes it at T - W (plain truncated BPTT: ``fixed``); 1 starts at 0 and slides forward
by W when the loss stops improving (``moving``). The schedule's state is plain data, so a resumed
run continues it exactly.
"""

from __future__ import annotations

import torch


class WindowSchedule:
    def __init__(self, mode: str, unroll: int, window: int, generator: torch.Generator, patience: int = 2):
        if window > unroll:
            raise ValueError(f"window {window} is longer than the unroll {unroll}")
        self.mode, self.unroll, self.window, self.generator, self.patience = mode, unroll, window, generator, patience
        self.state = {"start": unroll - window if mode == "fixed" else 0, "best": None, "stale": 0,
                      "pass_loss": 0.0, "pass_steps": 0}

    @property
    def latest(self) -> int:
        return self.unroll - self.window

    def _draw(self) -> int:
        return int(torch.randint(0, self.latest + 1, (1,), generator=self.generator))

    def start(self, new_pass: bool) -> int:
        """The window start of the next meta-step; ``new_pass``: it opens a pass over the real data."""
        if self.mode == "random" or (self.mode == "random-per-epoch" and new_pass):
            self.state["start"] = self._draw()
        return int(self.state["start"])

    def record(self, meta_loss: float, pass_ends: bool) -> None:
        """After a meta-step: ``moving`` keeps each pass's mean meta-loss and moves on when it stalls."""
        if self.mode != "moving":
            return
        s = self.state
        s["pass_loss"] += float(meta_loss)
        s["pass_steps"] += 1
        if not pass_ends:
            return
        mean = s["pass_loss"] / s["pass_steps"]
        s["pass_loss"], s["pass_steps"] = 0.0, 0
        if s["best"] is None or mean < s["best"]:
            s["best"], s["stale"] = mean, 0
            return
        s["stale"] += 1
        if s["stale"] >= self.patience:
            s["start"] = min(self.latest, s["start"] + self.window)
            s["best"], s["stale"] = None, 0
