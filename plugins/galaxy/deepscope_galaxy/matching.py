"""The trajectory-matching inner loop: N SGD steps on the synthetic set, on one flat parameter vector.

As MTT's ``ReparamModule``: the student is a single vector ``theta`` (``flatten_params`` order of the
body's parameters), each step is ``theta <- theta - syn_lr * grad`` with ``create_graph=True``, so the
final vector is a differentiable function of the images and of ``syn_lr``. The loss is
``||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2`` (the official per-parameter means
cancel). With ``checkpoint`` each step runs under ``torch.utils.checkpoint``: its activations are
recomputed in the backward pass instead of kept, so memory stops growing with N times the
activations (the N parameter vectors remain).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from deepscope_standard import unflatten_params

#: augment(x, step) -> x: the augmentation of step ``step``'s synthetic batch (identity when None)
Augment = Optional[Callable[[torch.Tensor, int], torch.Tensor]]


def batch_schedule(n: int, batch: int | None, steps: int, generator: torch.Generator) -> list[torch.Tensor]:
    """The official batch order: chunks of a random permutation, taken from the end, redrawn when used up."""
    batch = batch or n
    chunks: list[torch.Tensor] = []
    out = []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.randperm(n, generator=generator).split(batch))
        out.append(chunks.pop())
    return out


def student_loss(body, like, flat, x, y, buffers=None) -> torch.Tensor:
    params = unflatten_params(flat, like)
    return F.cross_entropy(functional_call(body, {**params, **(buffers or {})}, (x,)), y)


def unroll(body: torch.nn.Module, like: dict, start: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
           lr: torch.Tensor, batches: list[torch.Tensor], augment: Augment = None, *, create_graph: bool = True,
           checkpoint: bool = False, buffers: dict | None = None) -> torch.Tensor:
    """``len(batches)`` SGD steps from the flat vector ``start``; the final flat vector.

    ``create_graph = False`` (a validation pass) keeps no graph between steps: the result is detached.
    """
    flat = start.detach().requires_grad_()
    for step, idx in enumerate(batches):
        x = images[idx]
        if augment is not None:
            x = augment(x, step)
        y = labels[idx]
        if not create_graph:
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(student_loss(body, like, flat, x.detach(), y, buffers), flat)
            flat = (flat - lr.detach() * grad).detach().requires_grad_()
        elif checkpoint:
            flat = torch_checkpoint(_step, body, like, buffers, flat, x, y, lr, use_reentrant=False)
        else:
            flat = _step(body, like, buffers, flat, x, y, lr)
    return flat if create_graph else flat.detach()


def _step(body, like, buffers, flat, x, y, lr):
    (grad,) = torch.autograd.grad(student_loss(body, like, flat, x, y, buffers), flat, create_graph=True)
    return flat - lr * grad


def matching_loss(final: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The normalized parameter-matching loss (exactly 1 when ``final`` is ``start``)."""
    return (final - target).pow(2).sum() / (start - target).pow(2).sum()
