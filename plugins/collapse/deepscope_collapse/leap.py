"""Where fooled examples land: the "leap" between simplex vertices (Su et al., Sec. 4).

The paper's picture of a standard network under attack is that a perturbed
feature jumps to the vertex of the class the network now predicts. We test it
directly: among the examples the attack fools (right on the clean input, wrong
on the perturbed one), the
fraction whose perturbed feature is nearest (Euclidean) the *clean* class mean
of the predicted class (``leap``), and the fraction still nearest the clean mean
of the true class (``stay``). ``ncc_clean_acc`` is the nearest-clean-centre
accuracy over all perturbed examples: how reliable the clean simplex of that
layer still is. Counts only; no feature is stored.
"""

from __future__ import annotations

import torch

from .metrics import MeanAccumulator


class LeapAccumulator:
    """Nearest-clean-centre counts on perturbed features, split by whether the network was fooled."""

    def __init__(self, clean: MeanAccumulator):
        present = clean.present
        self.centres = clean.means()[present]
        self.class_ids = torch.nonzero(present).flatten()
        self.n = 0
        self.fooled = 0
        self.leaped = 0
        self.stayed = 0
        self.nearest_true = 0

    def nearest(self, features: torch.Tensor) -> torch.Tensor:
        h = features.detach().flatten(1).double()
        dist = torch.cdist(h, self.centres.to(h.device))
        return self.class_ids.to(h.device)[dist.argmin(1)]

    def update(self, features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor,
               clean_logits: torch.Tensor) -> None:
        near = self.nearest(features)
        labels = labels.to(near.device)
        pred = logits.argmax(1).to(near.device)
        fooled = (pred != labels) & (clean_logits.argmax(1).to(near.device) == labels)
        self.n += len(labels)
        self.fooled += int(fooled.sum())
        self.leaped += int((fooled & (near == pred)).sum())
        self.stayed += int((fooled & (near == labels)).sum())
        self.nearest_true += int((near == labels).sum())

    def metrics(self) -> dict[str, float]:
        """``leap`` and ``stay`` only when some example was fooled (they are fractions of the fooled)."""
        out = {"fooled": self.fooled / max(1, self.n), "ncc_clean_acc": self.nearest_true / max(1, self.n)}
        if self.fooled:
            out["leap"] = self.leaped / self.fooled
            out["stay"] = self.stayed / self.fooled
        return out
