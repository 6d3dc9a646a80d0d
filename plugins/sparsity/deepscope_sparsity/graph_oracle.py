"""Effective masks of fully-connected chains by graph reachability (an independent oracle).

A unit is alive iff it is reachable from some input and can reach some output;
a weight is effective iff it is kept and joins two alive units.
"""

from __future__ import annotations

import torch


def mlp_effective_masks(masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Effective masks for a chain of linear layers; masks are (out, in) like ``nn.Linear.weight``."""
    adj = [m.bool() for m in masks]
    forward = [torch.ones(adj[0].shape[1], dtype=torch.bool)]
    for m in adj:
        forward.append((m & forward[-1][None, :]).any(dim=1))
    backward = [torch.ones(adj[-1].shape[0], dtype=torch.bool)]
    for m in reversed(adj):
        backward.append((m & backward[-1][:, None]).any(dim=0))
    backward.reverse()
    alive = [f & b for f, b in zip(forward, backward)]
    return [m & alive[i + 1][:, None] & alive[i][None, :] for i, m in enumerate(adj)]
