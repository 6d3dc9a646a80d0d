"""The supervised training loop, shared by the ``standard`` and ``adversarial`` trainers.

One loop (:func:`train_loop`) owns the optimizer, the schedule and the epoch
bookkeeping; a trainer only says what the loss of a batch is. Other
components train fresh models with :func:`train_model`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .recorded import record_perturbations

#: (model, x, y) -> (loss to minimize, per-batch sums such as {"loss": ..., "correct": ...})
BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


# --------------------------------------------------------------------------- optimizer and schedule


def make_optimizer(params: Iterable[nn.Parameter], config) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=(config.momentum, 0.999),
                                weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=config.nesterov)


def lr_factor(config, progress: float, total: float) -> float:
    """Multiplier of ``config.lr`` after ``progress`` of ``total`` units (epochs, or iterations).

    step: ``gamma ** (number of milestones <= progress)``; cosine:
    ``(1 + cos(pi * progress / total)) / 2``.
    """
    if config.schedule == "step":
        return config.gamma ** sum(progress >= m for m in config.milestones)
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, total) / total))
    return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, config, steps_per_epoch: int):
    """Per-iteration schedule; units are epochs, or iterations when ``config.iterations`` is set."""
    if config.iterations is not None:
        unit, total = 1, config.iterations
    else:
        unit, total = steps_per_epoch, config.epochs
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(config, it / unit, total))


# --------------------------------------------------------------------------- batches


def hard_labels(y: torch.Tensor) -> torch.Tensor:
    """Class indices of hard labels (any dtype, shape [N]) or soft ones (argmax of [N, C])."""
    return y.argmax(1) if y.dim() == 2 else y.long()


def cross_entropy_targets(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Class indices as int64, or soft [N, C] labels in the logits' dtype (what F.cross_entropy takes)."""
    return y.to(dtype) if y.dim() == 2 else y.long()


def regression_targets(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """MSE targets: class indices become one-hot rows; [N, C] float labels are used as they are."""
    if y.dim() != 2:
        return F.one_hot(y.long(), num_classes).to(dtype)
    if y.shape[1] != num_classes:
        raise ValueError(f"loss = 'mse': the labels have {y.shape[1]} columns but the model has "
                         f"{num_classes} outputs")
    return y.to(dtype)


def supervised_loss(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce",
                    label_smoothing: float = 0.0) -> torch.Tensor:
    """Batch-mean loss of ``logits`` against hard or soft labels ``y``.

    'ce': cross-entropy (soft [N, C] labels are probability targets);
    'mse': ``||logits - t||^2`` summed over outputs, averaged over the batch,
    with ``t`` from :func:`regression_targets`.
    """
    if loss == "mse":
        return (logits - regression_targets(y, logits.shape[1], logits.dtype)).square().sum(1).mean()
    if loss != "ce":
        raise ValueError(f"unknown loss {loss!r}: use 'ce' or 'mse'")
    return F.cross_entropy(logits, cross_entropy_targets(y, logits.dtype), label_smoothing=label_smoothing)


def supervised_batch_loss(loss: str = "ce", label_smoothing: float = 0.0) -> BatchLoss:
    """The standard batch loss (see :func:`supervised_loss`); accuracy counts use hard labels."""

    def batch_loss(model, x, y):
        logits = model(x)
        value = supervised_loss(logits, y, loss, label_smoothing)
        return value, {"loss": value.detach() * len(x), "correct": (logits.argmax(1) == hard_labels(y)).sum()}

    return batch_loss


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, device: torch.device | str) -> dict[str, float]:
    """Accuracy and mean cross-entropy in eval mode, whatever the training loss (the previous mode is restored)."""
    was_training = model.training
    model.eval()
    loss = correct = total = 0.0
    try:
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)
            loss += float(F.cross_entropy(logits.float(), cross_entropy_targets(y, torch.float32), reduction="sum"))
            correct += float((logits.argmax(1) == hard_labels(y)).sum())
            total += len(y)
    finally:
        model.train(was_training)
    return {"acc": correct / max(total, 1), "loss": loss / max(total, 1)}


# --------------------------------------------------------------------------- the loop


def train_loop(model: nn.Module, loader: DataLoader, config, device: torch.device | str, *,
               batch_loss: BatchLoss, after_step: Callable[[], None] | None = None,
               epoch_end: Callable[[int, dict[str, float], dict[str, Any]], None] | None = None,
               progress: Callable[[Iterable, int, int], Iterable] | None = None,
               resume: Callable[[dict[str, Any]], int] | None = None) -> list[dict[str, float]]:
    """Train ``model`` in place for ``config.epochs`` (or ``config.iterations``) with its optimizer/schedule.

    Per epoch, the means of ``batch_loss``'s sums (``loss``, ``train_acc`` from
    ``correct``, and ``<name>_acc`` from any other ``<name>_correct``) go to
    ``epoch_end(epoch, metrics, {"optimizer": ..., "scheduler": ...})`` and into
    the returned history. ``resume(those objects)`` restores them from a
    checkpoint and returns how many epochs were already done.
    """
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError("the training set is empty")
    total_steps = config.iterations if config.iterations is not None else config.epochs * steps_per_epoch
    optimizer = make_optimizer(model.parameters(), config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    objects = {"optimizer": optimizer, "scheduler": scheduler}
    epoch = resume(objects) if resume is not None else 0
    step = min(epoch * steps_per_epoch, total_steps)
    was_training = model.training
    history = []
    try:
        while step < total_steps:
            model.train()
            sums: dict[str, torch.Tensor] = {}
            seen = 0
            batches = min(steps_per_epoch, total_steps - step)
            iterator = progress(loader, batches, epoch) if progress is not None else loader
            for i, (x, y) in enumerate(iterator):
                if i >= batches:
                    break
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss, batch_sums = batch_loss(model, x, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                if after_step is not None:
                    after_step()
                for key, value in batch_sums.items():
                    sums[key] = sums[key] + value if key in sums else value
                seen += len(x)
            epoch += 1
            metrics = _epoch_metrics(sums, seen)
            history.append(metrics)
            if epoch_end is not None:
                epoch_end(epoch, metrics, objects)
    finally:
        model.train(was_training)
    return history


def _epoch_metrics(sums: dict[str, torch.Tensor], seen: int) -> dict[str, float]:
    metrics = {}
    for key, value in sums.items():
        mean = float(value) / max(seen, 1)
        if key == "correct":
            metrics["train_acc"] = mean
        elif key.endswith("_correct"):
            metrics[key[: -len("_correct")] + "_acc"] = mean
        else:
            metrics[key] = mean
    return metrics


def train_model(model: nn.Module, data: DataLoader | Dataset | tuple[torch.Tensor, torch.Tensor], config,
                device: torch.device | str = "cpu", *, masks: dict[str, torch.Tensor] | None = None,
                test: Iterable | None = None, lr: float | None = None) -> list[dict[str, float]]:
    """Train a fresh model with the standard loss (e.g. on a distilled set); returns per-epoch metrics.

    ``data`` is a loader, a dataset or ``(x, y)`` tensors (y hard or soft);
    ``test`` (batches) adds ``test_acc`` per epoch; ``lr`` overrides the config's.
    """
    from deepscope import apply_masks

    if lr is not None:
        import attrs

        config = attrs.evolve(config, lr=lr)
    loader = _as_loader(data, config.batch_size, config.shuffle)
    model.to(device)
    apply_masks(model, masks or {})

    def epoch_end(epoch, metrics, objects):
        if test is not None:
            metrics["test_acc"] = evaluate(model, test, device)["acc"]

    return train_loop(model, loader, config, device, batch_loss=supervised_batch_loss(config.loss,
                                                                                      config.label_smoothing),
                      after_step=(lambda: apply_masks(model, masks)) if masks else None, epoch_end=epoch_end)


def _as_loader(data, batch_size: int | None, shuffle: bool) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, tuple):
        data = TensorDataset(*data)
    return DataLoader(data, batch_size=batch_size or 256, shuffle=shuffle)


# --------------------------------------------------------------------------- trainers


class StandardTrainer:
    """Cross-entropy or MSE training of ``state.model`` in place; masks stay applied after every step."""

    def __init__(self, config):
        self.config = config

    def batch_loss(self, state, ctx) -> BatchLoss:
        return supervised_batch_loss(self.config.loss, self.config.label_smoothing)

    def train(self, state, ctx) -> None:
        model, device = state.model, state.device
        test_loader = state.data.test_loader()
        state.apply_masks()

        def after_step():
            state.apply_masks()
            state.step += 1

        loader = state.data.train_loader(batch_size=self.config.batch_size, shuffle=self.config.shuffle)
        every = getattr(self.config, "test_every", 1)  # subclasses' configs may not have it
        last = (self.config.epochs if self.config.iterations is None
                else -(-self.config.iterations // max(len(loader), 1)))

        def epoch_end(epoch, metrics, objects):
            if epoch % every == 0 or epoch >= last:
                metrics["test_acc"] = evaluate(model, test_loader, device)["acc"]
            ctx.epoch_end(metrics, checkpoint=objects)  # saved every [run] checkpoint_every epochs

        def progress(loader, total, epoch):
            return ctx.progress(loader, total=total, description=f"{ctx.prefix} epoch {epoch + 1}")

        train_loop(model, loader, self.config, device,
                   batch_loss=self.batch_loss(state, ctx), after_step=after_step, epoch_end=epoch_end,
                   progress=progress, resume=lambda objects: ctx.resume(**objects))


class AdversarialTrainer(StandardTrainer):
    """Madry-style training on the inner attack's examples; the attack runs in mode ``bn_mode``."""

    def build_attack(self, state) -> Any:
        spec = self.config.attack
        if isinstance(spec, dict):  # the default, not checked by the loader: check and build it now
            params = {k: v for k, v in spec.items() if k != "use"}
            return state.component("attack", spec["use"], **params)
        return spec.build()

    def batch_loss(self, state, ctx) -> BatchLoss:
        attack = self.build_attack(state)
        kind, smoothing, mix = self.config.loss, self.config.label_smoothing, self.config.mix
        attack_in_train_mode = self.config.bn_mode == "train"

        keep = self.config.keep_perturbations

        def batch_loss(model, x, y):
            model.train(attack_in_train_mode)
            x_adv = attack.perturb(model, x, y)
            record_perturbations(state, x, x_adv, hard_labels(y), keep)
            if mix == 0:  # clean accuracy for the log only: no graph, no BatchNorm statistics update
                model.eval()
                with torch.no_grad():
                    clean_logits = model(x)
            model.train()
            adv_logits = model(x_adv)
            loss = supervised_loss(adv_logits, y, kind, smoothing)
            if mix > 0:
                clean_logits = model(x)
                loss = (1 - mix) * loss + mix * supervised_loss(clean_logits, y, kind, smoothing)
            labels = hard_labels(y)
            return loss, {"loss": loss.detach() * len(x), "correct": (clean_logits.argmax(1) == labels).sum(),
                          "robust_train_correct": (adv_logits.argmax(1) == labels).sum()}

        return batch_loss
