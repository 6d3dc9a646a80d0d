"""Shared set-up of the probes: which examples, which precision, which model copy."""

from __future__ import annotations

import copy

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def probe_model(state, dtype: str) -> torch.nn.Module:
    """An eval-mode copy of the run's model in the requested precision (the run's model is untouched)."""
    model = copy.deepcopy(state.model).to(DTYPES[dtype])
    model.eval()
    return model


def probe_examples(state, split: str, n: int, dtype: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = state.data.tensors(split, n)
    return x.to(state.device, DTYPES[dtype]), y.to(state.device)
