"""The ``smoothing`` probe: certified L2 robustness of the Gaussian-smoothed model (Cohen et al. 2019).

The smoothed classifier predicts the class the model outputs most often under
x + N(0, sigma^2 I). CERTIFY picks the top class from ``n0`` samples, bounds its
probability from below with ``n`` fresh samples (one-sided Clopper-Pearson at level
``alpha``), and abstains unless the bound exceeds 1/2; otherwise the prediction is
certified within L2 radius sigma * Phi^-1(p_lower). Certified accuracy at r counts
the examples predicted correctly with a radius of at least r. The noise is not
clamped to [0, 1], as in the paper. A model with its own noise (scattering + noise)
is smoothed on top of it; its certificate covers the combined randomness.
"""

from __future__ import annotations


import torch


def binomial_tail(k: torch.Tensor, n: int, p: torch.Tensor) -> torch.Tensor:
    """P(Binomial(n, p) >= k), elementwise, in float64."""
    i = torch.arange(n + 1, dtype=torch.float64)
    log_choose = torch.lgamma(torch.tensor(n + 1.0, dtype=torch.float64)) - torch.lgamma(i + 1) - \
        torch.lgamma(n - i + 1)
    p = p.double().clamp(1e-300, 1 - 1e-16)[:, None]
    log_pmf = log_choose + i * p.log() + (n - i) * torch.log1p(-p)
    mask = i[None, :] >= k.double()[:, None]
    return torch.where(mask, log_pmf.exp(), torch.zeros_like(log_pmf)).sum(1)


def clopper_pearson_lower(k: torch.Tensor, n: int, alpha: float, iterations: int = 60) -> torch.Tensor:
    """The one-sided (1 - alpha) lower confidence bound on p from k successes in n: P(Bin(n, p) >= k) = alpha."""
    k = k.long()
    low = torch.zeros(len(k), dtype=torch.float64)
    high = torch.ones(len(k), dtype=torch.float64)
    for _ in range(iterations):  # the tail grows with p: bisect
        mid = (low + high) / 2
        below = binomial_tail(k, n, mid) < alpha
        low = torch.where(below, mid, low)
        high = torch.where(below, high, mid)
    return torch.where(k == 0, torch.zeros_like(low), low)


def class_counts(model, x: torch.Tensor, sigma: float, samples: int, batch: int, num_classes: int,
                 gen: torch.Generator) -> torch.Tensor:
    """(N, classes) counts of the model's predictions under ``samples`` noise draws per example."""
    counts = torch.zeros(len(x), num_classes, dtype=torch.long)
    with torch.no_grad():
        for i, xi in enumerate(x):
            left = samples
            while left > 0:
                m = min(left, batch)
                noise = torch.randn((m, *xi.shape), generator=gen).to(x.device) * sigma
                pred = model(xi.unsqueeze(0) + noise).argmax(1).cpu()
                counts[i] += torch.bincount(pred, minlength=num_classes)
                left -= m
    return counts


def certify(model, x: torch.Tensor, sigma: float, n0: int, n: int, alpha: float, batch: int, num_classes: int,
            gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class or -1 to abstain, certified L2 radius) per example."""
    top = class_counts(model, x, sigma, n0, batch, num_classes, gen).argmax(1)
    counts = class_counts(model, x, sigma, n, batch, num_classes, gen)
    p_lower = clopper_pearson_lower(counts.gather(1, top[:, None]).squeeze(1), n, alpha)
    certified = p_lower > 0.5
    radius = torch.where(certified, sigma * torch.special.ndtri(p_lower.clamp(max=1 - 1e-16)),
                         torch.zeros_like(p_lower))
    return torch.where(certified, top, torch.full_like(top, -1)), radius.float()


class SmoothingCertify:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict[str, float]:
        c = self.config
        x, y = state.data.tensors("test", c.n_examples)
        gen = torch.Generator().manual_seed(c.seed)
        with ctx.eval_mode() as model:
            pred, radius = certify(model, x.to(state.device), c.sigma, c.n0, c.n, c.alpha, c.sample_batch,
                                   state.info.num_classes, gen)
        correct = pred == y
        metrics = {"abstain": (pred == -1).float().mean().item(),
                   "smoothed_acc": correct.float().mean().item(),
                   "mean_radius": torch.where(correct, radius, torch.zeros_like(radius)).mean().item(),
                   "max_certifiable_radius": c.sigma * float(torch.special.ndtri(
                       clopper_pearson_lower(torch.tensor([c.n]), c.n, c.alpha).clamp(max=1 - 1e-16)))}
        rows = []
        for r in c.radii:
            acc = (correct & (radius >= r)).float().mean().item()
            metrics[f"certified_acc_{r:g}"] = acc
            rows.append({"radius": r, "certified_acc": acc})
        ctx.log_table("certified_accuracy", rows)
        return metrics
