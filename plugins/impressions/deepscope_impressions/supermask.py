"""Supermask layers: a fixed signed-constant weight W, one mask per slot, and per-task mask combinations.

A layer owns ``slots`` score tensors (one per task, plus ``extra_masks`` for bases).
Task ``t`` either uses the mask of its own slot (SupSup), or ``W * sum_s alpha_t[s] M_s``
over the basis slots chosen for it (ImpressLearn). The weights are never trained and the
masks are module state, so the core's pruning masks stay empty.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class StraightThrough(torch.autograd.Function):
    """Forward: a binary mask of the scores; backward: the incoming gradient unchanged (identity)."""

    @staticmethod
    def forward(ctx, scores, density: float, selection: str):
        return binary_mask(scores, density, selection)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def straight_through_mask(scores: torch.Tensor, density: float, selection: str) -> torch.Tensor:
    """The mask with gradient = identity with respect to the ranked values: |scores| for 'topk-abs'
    (so d mask / d scores = sign(scores), as RAIVNLab's GetSubnet of scores.abs()), scores otherwise."""
    if selection == "topk-abs":
        return StraightThrough.apply(scores.abs(), density, "topk")
    return StraightThrough.apply(scores, density, selection)


def kept_count(numel: int, density: float) -> int:
    """Weights a top-k mask keeps: numel - floor((1 - density) * numel), as RAIVNLab's GetSubnet."""
    return numel - int((1 - density) * numel)


def binary_mask(scores: torch.Tensor, density: float, selection: str) -> torch.Tensor:
    """'topk-abs': top-k of |scores|; 'topk': top-k of scores; 'threshold': scores >= 0."""
    if selection == "threshold":
        return (scores >= 0).to(scores.dtype)
    values = scores.abs() if selection == "topk-abs" else scores
    flat = values.flatten()
    keep = kept_count(flat.numel(), density)
    out = torch.zeros_like(flat)
    out[torch.topk(flat, keep, sorted=False).indices] = 1.0
    return out.view_as(scores)


def signed_constant_(weight: torch.Tensor, gain: float) -> torch.Tensor:
    """W = sign(N(0, 1)) * gain / sqrt(fan_in): every weight has the same magnitude (SupSup's signed_constant)."""
    fan_in = weight[0].numel()
    with torch.no_grad():
        signs = torch.randn_like(weight).sign()
        signs[signs == 0] = 1.0
        weight.copy_(signs * (gain / math.sqrt(fan_in)))
    return weight


class MaskedLayer(nn.Module):
    """Shared state of masked linear and conv layers; subclasses supply ``apply(x, weight)``."""

    def setup(self, weight_shape, slots: int, tasks: int, density: float, selection: str, gain: float) -> None:
        self.density, self.selection = density, selection
        self.weight = nn.Parameter(signed_constant_(torch.empty(weight_shape), gain), requires_grad=False)
        self.scores = nn.ParameterList()
        for _ in range(slots):
            s = torch.empty(weight_shape)
            nn.init.kaiming_uniform_(s, a=math.sqrt(5))
            self.scores.append(nn.Parameter(s))
        self.alphas = nn.ParameterList(nn.Parameter(torch.zeros(slots)) for _ in range(tasks))
        self.register_buffer("uses_alpha", torch.zeros(tasks, dtype=torch.bool))
        self.register_buffer("basis", torch.zeros(tasks, slots, dtype=torch.bool))
        self.task = 0
        self.superposed: torch.Tensor | None = None  # coefficients over tasks, for one-shot task inference
        self.forced: int | None = None  # a slot whose mask every task uses (probes of foreign-task accuracy)
        self._cache: dict[int, tuple[int, torch.Tensor]] = {}

    # -- masks -------------------------------------------------------------
    def mask(self, slot: int) -> torch.Tensor:
        """The binary mask of a slot; straight-through when its scores are trained, else cached."""
        scores = self.scores[slot]
        if torch.is_grad_enabled() and scores.requires_grad:
            return straight_through_mask(scores, self.density, self.selection)
        cached = self._cache.get(slot)
        if cached is None or cached[0] != scores._version or cached[1].device != scores.device:
            cached = (scores._version, binary_mask(scores.detach(), self.density, self.selection))
            self._cache[slot] = cached
        return cached[1]

    def task_mask(self, task: int) -> torch.Tensor:
        """What multiplies W for a task: its own mask, or sum_s alpha_t[s] M_s over its basis slots."""
        if not bool(self.uses_alpha[task]):
            return self.mask(task)
        alpha = self.alphas[task]
        slots = torch.nonzero(self.basis[task]).flatten().tolist()
        total = alpha[slots[0]] * self.mask(slots[0])
        for s in slots[1:]:
            total = total + alpha[s] * self.mask(s)
        return total

    def effective_weight(self) -> torch.Tensor:
        if self.forced is not None:
            return self.weight * self.mask(self.forced)
        if self.superposed is None:
            return self.weight * self.task_mask(self.task)
        coef = self.superposed
        total = coef[0] * self.task_mask(0).detach()
        for t in range(1, coef.shape[0]):
            total = total + coef[t] * self.task_mask(t).detach()
        return self.weight * total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.effective_weight())


class MaskedLinear(MaskedLayer):
    def __init__(self, fan_in: int, fan_out: int, slots: int, tasks: int, density: float, selection: str,
                 gain: float):
        super().__init__()
        self.setup((fan_out, fan_in), slots, tasks, density, selection, gain)

    def apply(self, x, weight):
        return F.linear(x, weight)


class MaskedConv2d(MaskedLayer):
    def __init__(self, c_in: int, c_out: int, kernel: int, slots: int, tasks: int, density: float, selection: str,
                 gain: float, padding: int = 0, stride: int = 1):
        super().__init__()
        self.padding, self.stride = padding, stride
        self.setup((c_out, c_in, kernel, kernel), slots, tasks, density, selection, gain)

    def apply(self, x, weight):
        return F.conv2d(x, weight, stride=self.stride, padding=self.padding)


class TaskBatchNorm2d(nn.Module):
    """One non-affine BatchNorm per task (SupSup's MultitaskNonAffineBN); batch statistics when superposed."""

    def __init__(self, channels: int, tasks: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels, affine=False) for _ in range(tasks))
        self.task = 0
        self.superposed = None

    def forward(self, x):
        if self.superposed is not None:
            return F.batch_norm(x, None, None, training=True)
        return self.norms[self.task](x)


class SupermaskNet(nn.Module):
    """A task-aware body of masked layers: ``set_task``, slot and basis bookkeeping, superposition."""

    def init_slots(self, tasks: int, slots: int) -> None:
        self.num_tasks, self.num_slots = tasks, slots
        self._task = 0

    @property
    def task(self) -> int:
        return self._task

    def set_task(self, task: int) -> None:
        if not 0 <= task < self.num_tasks:
            raise IndexError(f"task {task} out of range: the model has {self.num_tasks} tasks")
        self._task = int(task)
        for m in self.modules():
            if isinstance(m, (MaskedLayer, TaskBatchNorm2d)):
                m.task = int(task)

    def masked_layers(self) -> list[MaskedLayer]:
        return [m for m in self.modules() if isinstance(m, MaskedLayer)]

    def prunable_parameters(self) -> dict[str, nn.Parameter]:
        """Nothing for the core's pruners: supermasks are this model's own state."""
        return {}

    def use_mask(self, task: int) -> None:
        """Task ``task`` uses the mask of its own slot (SupSup)."""
        for layer in self.masked_layers():
            layer.uses_alpha[task] = False

    def use_basis(self, task: int, slots: list[int], alpha: torch.Tensor | None = None) -> None:
        """Task ``task`` combines the masks of ``slots`` with per-layer coefficients (default: 1/k each)."""
        for layer in self.masked_layers():
            layer.uses_alpha[task] = True
            layer.basis[task] = False
            layer.basis[task, slots] = True
            with torch.no_grad():
                layer.alphas[task].zero_()
                layer.alphas[task][slots] = (1.0 / len(slots)) if alpha is None else alpha.to(layer.alphas[task])

    def superpose(self, coefficients: torch.Tensor | None) -> None:
        """Forward with sum_t c_t * mask_t (c over every task; None: back to the current task)."""
        for m in self.modules():
            if isinstance(m, (MaskedLayer, TaskBatchNorm2d)):
                m.superposed = coefficients

    def force_slot(self, slot: int | None) -> None:
        """Every task uses the mask of ``slot`` (None: each task its own again)."""
        for layer in self.masked_layers():
            layer.forced = slot

    def slot_mask(self, slot: int) -> torch.Tensor:
        """The slot's masks of every layer, flattened into one boolean vector."""
        with torch.no_grad():
            return torch.cat([layer.mask(slot).flatten() for layer in self.masked_layers()]).bool()

    def slot_params(self, slot: int) -> list[nn.Parameter]:
        return [layer.scores[slot] for layer in self.masked_layers()]

    def alpha_params(self, task: int) -> list[nn.Parameter]:
        return [layer.alphas[task] for layer in self.masked_layers()]


class SupermaskMLP(SupermaskNet):
    """Flatten, then bias-free masked linear layers with ReLU between them."""

    def __init__(self, config, info):
        super().__init__()
        tasks = max(1, info.num_tasks)
        slots = tasks + config.extra_masks
        self.init_slots(tasks, slots)
        sizes = [info.num_inputs, *config.widths, config.outputs or info.num_classes]
        self.layers = nn.ModuleList(
            MaskedLinear(a, b, slots, tasks, config.density, config.selection, config.gain)
            for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        x = x.flatten(1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class SupermaskLeNet(SupermaskNet):
    """Masked 5x5 convs (padding 2) + per-task BN + ReLU + max-pool, then masked FC layers."""

    def __init__(self, config, info):
        super().__init__()
        tasks = max(1, info.num_tasks)
        slots = tasks + config.extra_masks
        self.init_slots(tasks, slots)
        args = (slots, tasks, config.density, config.selection, config.gain)
        convs, norms, c, side = [], [], info.channels, info.height
        for out in config.channels:
            convs.append(MaskedConv2d(c, out, 5, *args, padding=2))
            norms.append(TaskBatchNorm2d(out, tasks))
            c, side = out, side // 2
        self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
        sizes = [c * side * side, *config.widths, config.outputs or info.num_classes]
        self.fcs = nn.ModuleList(MaskedLinear(a, b, *args) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        for conv, norm in zip(self.convs, self.norms):
            x = F.max_pool2d(F.relu(norm(conv(x))), 2)
        x = x.flatten(1)
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            if i < len(self.fcs) - 1:
                x = F.relu(x)
        return x


def make_mlp(config, info) -> SupermaskMLP:
    return SupermaskMLP(config, info)


def make_lenet(config, info) -> SupermaskLeNet:
    if info.height != info.width or info.height // 2 ** len(config.channels) < 1:
        from deepscope import ConfigError

        raise ConfigError(f"supermask-lenet needs square images of side >= {2 ** len(config.channels)}, got "
                          f"{info.height}x{info.width}", key="channels")
    return SupermaskLeNet(config, info)


class MaskedBlock(nn.Module):
    """ResNet basic block of masked 3x3 convs with per-task non-affine BN; masked 1x1 shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, args: tuple):
        super().__init__()
        tasks = args[1]
        self.conv1 = MaskedConv2d(c_in, c_out, 3, *args, padding=1, stride=stride)
        self.bn1 = TaskBatchNorm2d(c_out, tasks)
        self.conv2 = MaskedConv2d(c_out, c_out, 3, *args, padding=1)
        self.bn2 = TaskBatchNorm2d(c_out, tasks)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(MaskedConv2d(c_in, c_out, 1, *args, stride=stride),
                                          TaskBatchNorm2d(c_out, tasks))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class SupermaskResNet(SupermaskNet):
    """A reduced ResNet-18 (GEM's, as SupSup's GEMResNet18: width 20, blocks [2, 2, 2, 2]) of masked layers."""

    def __init__(self, config, info):
        super().__init__()
        tasks = max(1, info.num_tasks)
        slots = tasks + config.extra_masks
        self.init_slots(tasks, slots)
        args = (slots, tasks, config.density, config.selection, config.gain)
        w = config.width
        self.conv1 = MaskedConv2d(info.channels, w, 3, *args, padding=1)
        self.bn1 = TaskBatchNorm2d(w, tasks)
        stages, c_in = [], w
        for i, n in enumerate(config.blocks):
            c_out = w * 2 ** i
            for b in range(n):
                stages.append(MaskedBlock(c_in, c_out, 2 if (b == 0 and i > 0) else 1, args))
                c_in = c_out
        self.blocks = nn.Sequential(*stages)
        self.fc = MaskedLinear(c_in, config.outputs or info.num_classes, *args)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def make_resnet(config, info) -> SupermaskResNet:
    return SupermaskResNet(config, info)
