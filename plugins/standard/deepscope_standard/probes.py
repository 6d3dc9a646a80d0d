"""Basic probes: accuracy with calibration, weight statistics (distilled sets: distilled_eval.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .trainers import cross_entropy_targets, hard_labels


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> float:
    """ECE with equal-width bins (lo, hi] of the confidence: sum_b |B_b|/n * |acc(B_b) - conf(B_b)|."""
    confidence = confidence.double().flatten()
    correct = correct.double().flatten()
    if confidence.numel() == 0:
        return 0.0
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)[1:-1]
    index = torch.bucketize(confidence, edges, right=False)  # edges[i-1] < c <= edges[i]
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    acc_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    return float((acc_sum - conf_sum).abs().sum() / confidence.numel())


class AccuracyProbe:
    def __init__(self, config):
        self.config = config

    @torch.no_grad()
    def measure(self, state, ctx) -> dict[str, float]:
        c = self.config
        if c.n_examples is None:
            batches = state.data.test_loader(batch_size=c.batch_size)
        else:
            x, y = state.data.tensors("test", c.n_examples)
            batches = zip(x.split(c.batch_size), y.split(c.batch_size))
        model = state.model
        was_training = model.training
        model.eval()
        confidences, hits, loss, total = [], [], 0.0, 0
        try:
            for xb, yb in batches:
                xb, yb = xb.to(state.device), yb.to(state.device)
                logits = model(xb).float()
                loss += float(F.cross_entropy(logits, cross_entropy_targets(yb, logits.dtype), reduction="sum"))
                conf, pred = logits.softmax(1).max(1)
                confidences.append(conf.cpu())
                hits.append((pred == hard_labels(yb)).cpu())
                total += len(yb)
        finally:
            model.train(was_training)
        confidence, correct = torch.cat(confidences), torch.cat(hits)
        return {"acc": correct.double().mean().item(), "loss": loss / max(total, 1),
                "ece": expected_calibration_error(confidence, correct, c.bins)}


class WeightsProbe:
    def __init__(self, config):
        self.config = config

    @torch.no_grad()
    def measure(self, state, ctx) -> dict[str, float]:
        model = state.model
        prunable = state.prunable()
        out: dict[str, float] = {}
        total = nonzero = 0
        for name, p in model.named_parameters():
            total += p.numel()
            nonzero += int(torch.count_nonzero(p))
            if self.config.norms:
                out[f"norm/{name}"] = float(p.detach().float().norm())
        out["count/total"] = float(total)
        out["count/nonzero"] = float(nonzero)
        out["count/prunable"] = float(sum(p.numel() for p in prunable.values()))
        out["count/prunable_nonzero"] = float(sum(int(torch.count_nonzero(p)) for p in prunable.values()))
        out["norm/prunable"] = float(torch.sqrt(sum((p.detach().float() ** 2).sum() for p in prunable.values()))) \
            if prunable else 0.0
        return out
