"""Which layers a probe reads, and forward hooks that read them.

A *block* is a run of modules that starts at a conv/linear layer (or at a
composite module such as a residual block) and takes in the parameter-free or
normalization modules that follow it (BN, ReLU, pooling, dropout, flatten). We
read each block's last output, so a block's feature is "after its activation
and pooling". ``nn.Sequential`` and ``nn.ModuleList`` containers are opened;
the block holding the classifier is left out (its output is the logits); the
penultimate layer is always read at the classifier's input.

4-d outputs (N, C, H, W) are average-pooled over H x W (``spatial = "avg"``,
one value per channel; memory O(C_ch * classes)) or flattened
(``spatial = "flatten"``, every unit).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

STARTS_BLOCK = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONTAINERS = (nn.Sequential, nn.ModuleList)
PENULTIMATE = "penultimate"


def _units(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    """Leaves and composite modules in forward order, opening containers."""
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(child, CONTAINERS):
            yield from _units(child, full)
        else:
            yield full, child


def block_outputs(body: nn.Module, classifier: nn.Module | None = None) -> list[tuple[str, nn.Module]]:
    """(name, module) whose output ends each block of ``body``, in forward order."""
    blocks: list[list[tuple[str, nn.Module]]] = []
    for name, unit in _units(body, ""):
        composite = len(list(unit.children())) > 0
        if composite or isinstance(unit, STARTS_BLOCK):
            blocks.append([(name, unit)])
        elif blocks:
            blocks[-1].append((name, unit))
    if classifier is not None:
        blocks = [b for b in blocks if not any(m is classifier for _, m in b)]
    return [b[-1] for b in blocks]


def to_vectors(output: torch.Tensor, spatial: str) -> torch.Tensor:
    if output.dim() > 2 and spatial == "avg":
        return output.flatten(2).mean(2)
    return output.flatten(1)


class FeatureTaps:
    """Forward hooks on a :class:`deepscope.Network`: one forward gives logits and every read layer."""

    def __init__(self, network: nn.Module, layers: str = PENULTIMATE, spatial: str = "avg"):
        self.network = network
        self.spatial = spatial
        self.classifier = network.classifier
        self.modules: list[tuple[str, nn.Module]] = []
        if layers == "all":
            body = getattr(network, "body", network)
            self.modules = [(f"{i:02d}_{name}", m) for i, (name, m) in
                            enumerate(block_outputs(body, self.classifier))]
        self.names = [name for name, _ in self.modules] + [PENULTIMATE]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        captured: dict[str, torch.Tensor] = {}
        handles = []

        def keep(name):
            def hook(module, inputs, output):
                out = output[0] if isinstance(output, (tuple, list)) else output
                captured[name] = to_vectors(out.detach(), self.spatial)
            return hook

        def keep_input(module, inputs, output):
            captured[PENULTIMATE] = inputs[0].detach().flatten(1)

        for name, module in self.modules:
            handles.append(module.register_forward_hook(keep(name)))
        handles.append(self.classifier.register_forward_hook(keep_input))
        try:
            logits = self.network(x)
        finally:
            for h in handles:
                h.remove()
        return logits, captured
