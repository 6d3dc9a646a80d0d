"""The evaluation protocol of distilled sets (DC/MTT), and RaT-BPTT's optimistic in-code variant.

A distilled set is judged by what fresh networks learn from it: N networks per model spec, each
initialized from its own seed, trained on the set alone and tested on the real test set.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from deepscope import ConfigError

from .augment import DSA, DSA_DEFAULT, flip_rotate
from .synthetic_choice import chosen_synthetic
from .trainers import evaluate, hard_labels, supervised_loss

MODEL_SEED = 1000  # network i of every model spec is initialized from run seed + 1000 + i
ORDER_SEED = 2000  # its batch order and augmentation draw from run seed + 2000 + i


def class_balanced_prefix(labels: torch.Tensor, k: int, num_classes: int | None = None) -> torch.Tensor:
    """Indices of the first ``k`` examples of each class (hard labels, or the argmax of [N, C] ones),
    in the set's order. Raises ValueError when a class has fewer than ``k``."""
    classes = hard_labels(labels).cpu()
    num_classes = num_classes if num_classes is not None else int(classes.max()) + 1
    chosen = []
    for c in range(num_classes):
        members = (classes == c).nonzero().flatten()
        if len(members) < k:
            raise ValueError(f"class {c} has {len(members)} images, fewer than the budget {k}")
        chosen.append(members[:k])
    return torch.cat(chosen).sort().values


def set_loss(label_kind: str) -> str:
    """hard and soft labels: cross-entropy (soft ones as probability targets); regression: MSE."""
    return "mse" if label_kind == "regression" else "ce"


def _batches(n: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    return order.split(batch_size)


def _augmenter(kind: str, generator: torch.Generator,
               dsa_strategy: str = DSA_DEFAULT) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-batch augmentation: each call draws from ``generator`` (a fresh DSA seed per batch)."""
    if kind == "flip-rotate":
        return lambda x: flip_rotate(x, generator)
    if kind == "dsa":
        dsa = DSA(dsa_strategy)
        return lambda x: dsa(x, seed=int(torch.randint(2**31 - 1, (1,), generator=generator)))
    return lambda x: x


def train_on_set(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str, lr: float, epochs: int,
                 batch_size: int = 256, momentum: float = 0.9, weight_decay: float = 5e-4,
                 decay_at_half: bool = True, augment: str = "none", dsa_strategy: str = DSA_DEFAULT,
                 generator: torch.Generator | None = None) -> torch.nn.Module:
    """The DC/MTT training of one evaluation network, in place: SGD (momentum, coupled weight decay),
    ``epochs`` reshuffled passes in batches of ``batch_size``, lr x0.1 from epoch ``epochs // 2``."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    aug = _augmenter(augment, generator, dsa_strategy)
    model.train()
    for epoch in range(epochs):
        if decay_at_half and epoch == epochs // 2 and epochs > 1:
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.1
        for idx in _batches(len(x), batch_size, generator):
            value = supervised_loss(model(aug(x[idx])), y[idx], loss)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
    return model


def train_in_code(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str, lr: float,
                  steps: list[int], test: Callable[[], float], optimizer: str = "adam", batch_size: int = 256,
                  weight_decay: float = 5e-4, augment: str = "none", dsa_strategy: str = DSA_DEFAULT,
                  generator: torch.Generator | None = None) -> dict[int, float]:
    """RaT-BPTT's in-code evaluation of one network: constant-lr steps, tested after each of ``steps``."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    aug = _augmenter(augment, generator, dsa_strategy)
    wanted, results, done = sorted(set(steps)), {}, 0
    batches: list[torch.Tensor] = []
    while done < wanted[-1]:
        if not batches:
            batches = list(_batches(len(x), batch_size, generator))
        idx = batches.pop(0)
        model.train()
        value = supervised_loss(model(aug(x[idx])), y[idx], loss)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        done += 1
        if done in wanted:
            results[done] = test()
    return results


def _mean_std(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std(unbiased=False).item() if len(values) > 1 else 0.0)


class DistilledEval:
    """The ``distilled-eval`` probe (and its alias ``synthetic-accuracy``)."""

    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict[str, float]:
        c = self.config
        synthetic = chosen_synthetic(state, c.set)
        lr = self._lr(synthetic)
        x, y = synthetic.x.detach().to(state.device), synthetic.y.detach().to(state.device)
        if synthetic.space == "input":
            with torch.no_grad():
                x = state.model.from_input(x)
        subsets = [("all", None)]
        for k in c.budgets:
            try:
                subsets.append((k, class_balanced_prefix(y, k, state.info.num_classes).to(state.device)))
            except ValueError as exc:
                raise ConfigError(f"budget {k}: {exc}; the set has {len(y)} images. Use budgets no larger than "
                                  "the smallest class count.", key="budgets") from None
        specs = list(c.models) or [None]
        labels = _spec_labels(specs, state)
        test = state.real_data.test_loader()
        metrics: dict[str, float] = {}
        rows: list[dict[str, Any]] = []
        for spec, label in zip(specs, labels):
            prefix = f"{label}/" if len(specs) > 1 else ""
            for budget, idx in subsets:
                xs, ys = (x, y) if idx is None else (x[idx], y[idx])
                key = prefix if budget == "all" else f"{prefix}ipc_{budget}/"
                row = {"model": label, "budget": budget, "images": len(xs)}
                row.update(self._evaluate(state, spec, xs, ys, synthetic.label_kind, lr, test))
                rows.append(row)
                metrics.update({key + name: value for name, value in row.items()
                                if name not in ("model", "budget", "images")})
        ctx.log_table("distilled_eval", rows)
        return metrics

    def _lr(self, synthetic) -> float:
        c = self.config
        if c.lr == "learned" and synthetic.lr is None:
            raise ConfigError("lr = \"learned\" but the synthetic set carries no learned lr; give a number "
                              "(e.g. lr = 0.01).", key="lr")
        lr = synthetic.lr if (c.lr == "learned" or (c.use_synthetic_lr and synthetic.lr is not None)) else c.lr
        if isinstance(lr, torch.Tensor):
            if lr.numel() != 1:
                raise ConfigError(f"the synthetic set's learned lr is a per-step schedule ({lr.numel()} values), "
                                  "which this fixed-schedule protocol cannot use; give lr a number.", key="lr")
            lr = lr.item()
        return float(lr)

    def _evaluate(self, state, spec, x, y, label_kind, lr, test) -> dict[str, float]:
        c = self.config
        loss = set_loss(label_kind)
        per_network: list[Any] = []
        for i in range(c.n_models):
            model = state.build_model(spec, seed=state.seed + MODEL_SEED + i)
            generator = torch.Generator().manual_seed(state.seed + ORDER_SEED + i)
            if c.protocol == "ratbptt-in-code":
                per_network.append(train_in_code(
                    model, x, y, loss=loss, lr=lr, steps=c.in_code_steps,
                    test=lambda m=model: evaluate(m, test, state.device)["acc"], optimizer=c.in_code_optimizer,
                    batch_size=c.batch_size, weight_decay=c.weight_decay, augment=c.augment,
                    dsa_strategy=c.dsa_strategy, generator=generator))
            else:
                train_on_set(model, x, y, loss=loss, lr=lr, epochs=c.epochs, batch_size=c.batch_size,
                             momentum=c.momentum, weight_decay=c.weight_decay, decay_at_half=c.decay_at_half,
                             augment=c.augment, dsa_strategy=c.dsa_strategy, generator=generator)
                per_network.append(evaluate(model, test, state.device)["acc"])
        if c.protocol != "ratbptt-in-code":
            mean, std = _mean_std(per_network)
            return {"acc_mean": mean, "acc_std": std}
        out: dict[str, float] = {}
        best = None
        for steps in sorted(set(c.in_code_steps)):
            mean, std = _mean_std([accs[steps] for accs in per_network])
            out[f"acc_mean_at_{steps}_steps"] = mean
            if best is None or mean > best[0]:
                best = (mean, std, steps)
        out.update({"acc_mean_best_of_test": best[0], "acc_std_best_of_test": best[1],
                    "steps_best_of_test": float(best[2])})
        return out


def _spec_labels(specs: list, state) -> list[str]:
    """Metric labels of the model specs: the model's name, with its index when a name repeats."""
    names = [state.pipeline.model.name if s is None else (s if isinstance(s, str) else s["use"]) for s in specs]
    return [f"{n}_{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]

