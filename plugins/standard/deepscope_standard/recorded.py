"""The training perturbations themselves, kept for the probes (public: ``record_perturbations``,
``recorded_perturbations``).

The official robust_neural_collapse code computes NC for PGD-AT and TRADES on the
x_adv the training step made (train-mode attack, a model that moves within the
epoch), not on a fresh post-epoch attack. A trainer with ``keep_perturbations = N``
(``adversarial`` here, ``trades`` in the collapse plugin) keeps the first N (clean
input, x_adv, label) rows of every epoch here; the collapse plugin's
``neural-collapse`` probe with ``train_perturbations = true`` measures on the last
epoch's rows. Plain tensors on the CPU, so they are checkpointed with the state.
"""

from __future__ import annotations

import torch

#: the ``state.extras`` key (kept from when the collapse plugin owned it, so older checkpoints still load)
TRAIN_PERTURBATIONS_KEY = "deepscope_collapse/train_perturbations"


def record_perturbations(state, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, limit: int) -> None:
    """Append a batch's rows until ``limit`` are kept; a new epoch starts a new record."""
    if limit <= 0:
        return
    kept = state.extras.get(TRAIN_PERTURBATIONS_KEY)
    if kept is None or kept["epoch"] != state.epoch:
        kept = {"epoch": state.epoch, "x": x[:0].detach().cpu(), "x_adv": x_adv[:0].detach().cpu(),
                "y": y[:0].detach().cpu()}
        state.extras[TRAIN_PERTURBATIONS_KEY] = kept
    room = limit - len(kept["y"])
    if room <= 0:
        return
    kept["x"] = torch.cat([kept["x"], x[:room].detach().cpu()])
    kept["x_adv"] = torch.cat([kept["x_adv"], x_adv[:room].detach().cpu()])
    kept["y"] = torch.cat([kept["y"], y[:room].detach().cpu()])


def recorded_perturbations(state) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(clean x, x_adv, y) of the last training epoch, or None when no trainer kept any."""
    kept = state.extras.get(TRAIN_PERTURBATIONS_KEY)
    if not kept or len(kept["y"]) == 0:
        return None
    return kept["x"], kept["x_adv"], kept["y"]
