"""``full-batch-gd``: plain gradient descent on the whole training set, as in the reference's
trainability experiments, logging how far the weights move and how confident the net gets."""

from __future__ import annotations

import math

import torch
from torch import nn

from deepscope import PRUNABLE_TYPES

from .hessian import FlatModel, LossHessian, lanczos_top, split_batches


def count_layers(model: nn.Module) -> int:
    """L in lr = base_lr / alpha^(L-2): the number of Linear/Conv layers."""
    return sum(isinstance(m, PRUNABLE_TYPES) for m in model.modules())


def learning_rate(base_lr: float, scale: float, depth: int) -> float:
    return base_lr / scale ** (depth - 2)


def flat_parameters(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    denom = a.norm() * b.norm()
    return (torch.dot(a, b) / denom).item() if denom > 0 else math.nan


def weight_scale(model_config) -> float:
    """The alpha the weights were multiplied by (1 when the model applied it as a temperature)."""
    if getattr(model_config, "init_scale_as", "weights") != "weights":
        return 1.0
    return float(getattr(model_config, "init_scale", 1.0))


class FullBatchGD:
    def __init__(self, config):
        self.config = config

    def resolve_lr(self, state) -> tuple[float, float, int]:
        c = self.config
        scale = c.scale if c.scale is not None else weight_scale(state.pipeline.model.config)
        depth = c.depth if c.depth is not None else count_layers(state.model)
        return learning_rate(c.base_lr, scale, depth), scale, depth

    def train(self, state, ctx) -> None:
        c = self.config
        model = state.model
        lr, scale, depth = self.resolve_lr(state)
        ctx.print(f"  full-batch GD: lr = {c.base_lr} / {scale:g}^({depth}-2) = {lr:.4g}")
        x, y = state.data.tensors("train", c.n_examples)
        x, y = x.to(state.device), y.to(state.device)
        x_test, y_test = state.data.tensors("test", c.test_examples)
        x_test, y_test = x_test.to(state.device), y_test.to(state.device)
        params = [p for p in model.parameters() if p.requires_grad]
        w_init = flat_parameters(model)
        optimizer = torch.optim.SGD(params, lr=lr)
        was_training = model.training
        model.train()
        for step in ctx.progress(range(1, c.steps + 1), total=c.steps, description="full-batch-gd"):
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            value = loss.item()
            diverged = not math.isfinite(value)
            metrics = None
            if diverged or step % c.log_every == 0 or step == c.steps or step == 1:
                metrics = self.snapshot(state, logits, y, x_test, y_test, value, params, w_init)
            if diverged:  # stop at the first non-finite loss, with its step logged
                ctx.epoch_end(metrics)
                ctx.print(f"  [red]loss is not finite at step {step}; stopping[/]")
                break
            optimizer.step()
            state.apply_masks()
            state.step += 1
            ctx.epoch_end(metrics)
        model.train(was_training)

    def snapshot(self, state, logits, y, x_test, y_test, loss, params, w_init) -> dict[str, float]:
        """Metrics at the current weights (before this step's update).

        Test accuracy and sharpness are measured in eval mode, so models with
        BatchNorm or dropout neither use test-batch statistics nor have their
        running statistics changed by the measurement.
        """
        was_training = state.model.training
        state.model.eval()
        try:
            return self._snapshot(state, logits, y, x_test, y_test, loss, params, w_init)
        finally:
            state.model.train(was_training)

    def _snapshot(self, state, logits, y, x_test, y_test, loss, params, w_init) -> dict[str, float]:
        c = self.config
        g = torch.cat([p.grad.reshape(-1) for p in params])
        w = flat_parameters(state.model)
        with torch.no_grad():
            test_acc = (state.model(x_test).argmax(1) == y_test).double().mean().item()
        out = {
            "loss": loss,
            "train_acc": (logits.argmax(1) == y).double().mean().item(),
            "test_acc": test_acc,
            "grad_norm": g.norm().item(),
            "weight_norm": w.norm().item(),
            "cos_to_init": cosine(w, w_init),
            "cos_weight_grad": cosine(w, g),
            "zero_logit_fraction": (logits == 0).double().mean().item(),
        }
        if c.sharpness_steps and math.isfinite(loss):
            flat = FlatModel(state.model)
            xs, ys = state.data.tensors("train", c.sharpness_examples)
            batches = split_batches((xs.to(state.device), ys.to(state.device)), 500)
            hessian = LossHessian(flat, batches)
            gen = torch.Generator().manual_seed(state.step)
            out["sharpness"] = max(lanczos_top(hessian.matmul, flat.dim, c.sharpness_steps, gen), 1e-15)
        return out
