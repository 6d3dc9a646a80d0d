"""The model wrapper every pipeline uses: normalization first, then optional preprocessing, logits out.

Normalization (and preprocessing such as ZCA whitening) lives inside the model
so attacks and probes work on inputs in [0, 1]. The wrapper also finds the
penultimate features and the prunable weights of any body built from standard
torch layers, unless the body says otherwise (``features(x)`` /
``prunable_parameters()`` methods), and passes ``set_task(t)`` on to
task-aware bodies.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Iterable

import torch
from torch import nn

if TYPE_CHECKING:
    from .config import ComponentSpec

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class Normalize(nn.Module):
    """(x - mean) / std per channel, as a layer so gradients flow to [0, 1] inputs."""

    def __init__(self, mean: Iterable[float], std: Iterable[float]):
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.as_tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return (x - self.mean) / self.std
        return (x - self.mean.flatten()[0]) / self.std.flatten()[0]

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 4:
            return z * self.std + self.mean
        return z * self.std.flatten()[0] + self.mean.flatten()[0]


class LinearPreprocess(nn.Module):
    """``z = (flatten(x) - shift) @ matrix.T``, reshaped back: ZCA or PCA whitening as buffers.

    ``matrix`` is (d, d) for inputs of d = C*H*W values; ``inverse`` solves the linear system, so a
    distilled set held in the whitened space maps back to the (unclamped) pixels the model expects.
    """

    def __init__(self, matrix: torch.Tensor, shift: torch.Tensor | None = None):
        super().__init__()
        matrix = torch.as_tensor(matrix, dtype=torch.float32)
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"the preprocessing matrix must be square, got shape {tuple(matrix.shape)}")
        self.register_buffer("matrix", matrix)
        self.register_buffer("shift", torch.zeros(matrix.shape[0]) if shift is None
                             else torch.as_tensor(shift, dtype=torch.float32).flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.flatten(1) - self.shift) @ self.matrix.T).view_as(x)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        flat = torch.linalg.solve(self.matrix.double(), z.flatten(1).double().T).T
        return (flat.float() + self.shift).view_as(z)


class Network(nn.Module):
    """``body(preprocess(normalize(x)))`` with helpers for probes, pruners and task-aware bodies."""

    def __init__(self, body: nn.Module, mean: Iterable[float], std: Iterable[float],
                 preprocess: nn.Module | None = None):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.preprocess = preprocess if preprocess is not None else nn.Identity()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.to_input(x))

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> what the body sees (normalized, then preprocessed)."""
        return self.preprocess(self.normalize(x))

    def from_input(self, z: torch.Tensor) -> torch.Tensor:
        """What the body sees -> the pixels that give it (unclamped); needs an invertible preprocessing."""
        if not isinstance(self.preprocess, nn.Identity):
            inverse = getattr(self.preprocess, "inverse", None)
            if not callable(inverse):
                raise TypeError(f"{type(self.preprocess).__name__} has no inverse(z), so input-space data cannot "
                                "be fed to this model; give the preprocessing module an inverse method")
            z = inverse(z)
        return self.normalize.inverse(z)

    # -- tasks --------------------------------------------------------------
    def set_task(self, task: int) -> None:
        """Switch a task-aware body (``body.set_task``) to task ``task``; see deepscope.contracts.TaskAware."""
        set_task = getattr(self.body, "set_task", None)
        if not callable(set_task):
            raise TypeError(f"{type(self.body).__name__} is not task-aware: it has no set_task(t) method")
        set_task(int(task))

    @property
    def task(self) -> int | None:
        """The task a task-aware body is set to (None for other bodies)."""
        return getattr(self.body, "task", None) if self.task_aware else None

    @property
    def task_aware(self) -> bool:
        return callable(getattr(self.body, "set_task", None))

    # -- probes -------------------------------------------------------------
    @property
    def classifier(self) -> nn.Module:
        """The last linear layer (its input is the penultimate feature vector)."""
        cls = getattr(self.body, "classifier", None)
        if isinstance(cls, nn.Linear):
            return cls
        last = None
        for module in self.body.modules():
            if isinstance(module, nn.Linear):
                last = module
        if last is None:
            raise TypeError(f"{type(self.body).__name__} has no nn.Linear layer; define features(x) and classifier")
        return last

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: the input of the classifier layer, flattened."""
        body_features = getattr(self.body, "features", None)
        if callable(body_features) and not isinstance(body_features, nn.Module):
            return body_features(self.to_input(x))
        return self.forward_with_features(x)[1]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and penultimate features in one pass."""
        captured: list[torch.Tensor] = []
        handle = self.classifier.register_forward_hook(lambda m, inp, out: captured.append(inp[0]))
        try:
            logits = self.forward(x)
        finally:
            handle.remove()
        return logits, captured[-1].flatten(1)

    # -- pruning ------------------------------------------------------------
    def prunable_parameters(self) -> dict[str, nn.Parameter]:
        """Conv and linear kernels by full parameter name; biases and norms never."""
        own = getattr(self.body, "prunable_parameters", None)
        if callable(own):
            return {f"body.{name}": p for name, p in own().items()}
        return layer_weights(self)


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Prunable weights of any model, by ``named_parameters`` name."""
    if isinstance(model, Network):
        return model.prunable_parameters()
    return layer_weights(model)


def layer_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weights of the conv and linear layers (biases and norms are never pruned)."""
    out = {}
    for mname, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES) and getattr(module, "weight", None) is not None:
            out[f"{mname}.weight" if mname else "weight"] = module.weight
    return out


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned weights in place (call after every optimizer step)."""
    if not masks:
        return
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        p = params[name]
        p.mul_(mask.to(device=p.device, dtype=p.dtype))


def mask_sparsity(masks: dict[str, torch.Tensor], model: nn.Module | None = None) -> float:
    """Fraction of pruned prunable weights (0 when nothing is masked)."""
    total = pruned = 0
    if model is not None:
        for name, p in prunable_parameters(model).items():
            total += p.numel()
            if name in masks:
                pruned += int((masks[name] == 0).sum())
    else:
        for m in masks.values():
            total += m.numel()
            pruned += int((m == 0).sum())
    return pruned / total if total else 0.0


def build_network(spec: "ComponentSpec", info: Any) -> Network:
    """The model component's body behind a normalization layer."""
    body = spec.build(info)
    if not isinstance(body, nn.Module):
        raise TypeError(f"model {spec.name!r} ({spec.component.plugin}) returned {type(body).__name__}, "
                        "not a torch.nn.Module")
    return Network(body, info.mean, info.std, preprocess=copy.deepcopy(getattr(info, "preprocess", None)))
