"""STM's stage rule (the official ``distill.py`` "Stage Distillation Algorithm and Level Up"), torch-free.

Each iteration (while not fine-tuning) appends the validation loss of the next stage (theta*_cap ->
theta*_{cap+1}). Then, when the stage holds n >= min_duration losses and n % 10 == 0:

1. unless already passed or fine-tuning: fine-tuning starts if n > max_duration; otherwise the stage
   passes (sticky) if r < -sigma / sqrt(n - 2), r the Pearson correlation of the losses with their index;
2. fine-tuning, on iterations divisible by finetune_every: lr_img *= decay, the run stops below the floor;
3. else, not passed and n % 20 == 0: pending (nothing happens);
4. else, passed or r > 3 / sqrt(n - 2) (the losses rise: earlier stages overfit): the losses are reset
   and the cap advances by one, up to max_start_epoch.

Branch 3 comes before branch 4, as in the official code: a rising sequence is caught at n = 20 by
"pending" and advances at n = 30. A constant sequence has r = NaN and never advances.
"""

from __future__ import annotations

import math

import numpy as np


def pearson_with_index(values: list[float]) -> float:
    """np.corrcoef(values, range(n))[0, 1]; NaN for a constant sequence."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.corrcoef(np.asarray(values, dtype=np.float64), np.arange(len(values)))[0, 1])


class StageRule:
    def __init__(self, *, init_epoch: int, max_start_epoch: int, sigma: float, min_duration: int = 1,
                 max_duration: int = 1000, finetune_every: int = 50, decay: float = 0.8, floor: float = 50.0):
        self.max_start_epoch, self.sigma = max_start_epoch, sigma
        self.min_duration, self.max_duration = min_duration, max_duration
        self.finetune_every, self.decay, self.floor = finetune_every, decay, floor
        #: plain data a checkpoint refills in place
        self.progress = {"cap": init_epoch, "passed": False, "fine_tuning": False, "stopped": False}
        self.test_loss: list[float] = []

    @property
    def cap(self) -> int:
        return int(self.progress["cap"])

    @property
    def collecting(self) -> bool:
        """Whether this iteration measures the next stage (not once fine-tuning has begun)."""
        return not self.progress["fine_tuning"]

    def record(self, loss: float) -> None:
        self.test_loss.append(float(loss))

    def check(self, iteration: int, lr_img: float) -> dict:
        """Apply the rule after iteration ``iteration``; returns what happened (the new lr_img included)."""
        p, n = self.progress, len(self.test_loss)
        out = {"checked": False, "advanced": False, "reset": False, "lr_img": lr_img, "stop": False,
               "r": math.nan, "threshold": math.nan, "stage_length": n}
        if not (n >= self.min_duration and n % 10 == 0):
            return out
        r = pearson_with_index(self.test_loss)
        s = math.sqrt(1 / (n - 2))
        out.update(checked=True, r=r, threshold=-self.sigma * s)
        if not p["passed"] and not p["fine_tuning"]:
            p["fine_tuning"] = n > self.max_duration
            if not p["fine_tuning"]:
                p["passed"] = bool(r < -self.sigma * s)
        if p["fine_tuning"] and iteration % self.finetune_every == 0:
            out["lr_img"] = lr_img * self.decay
            if out["lr_img"] < self.floor:
                p["stopped"] = out["stop"] = True
        elif not p["passed"] and n % 20 == 0:
            pass  # pending
        elif p["passed"] or r > 3 * s:
            self.test_loss.clear()
            p["passed"] = False
            out["reset"] = True
            if p["cap"] + 1 <= self.max_start_epoch:
                p["cap"] += 1
                out["advanced"] = True
        return out
