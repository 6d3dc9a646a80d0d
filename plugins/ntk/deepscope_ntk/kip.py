"""Distillers ``kip`` (Kernel Inducing Points) and ``label-solve`` on a kernel-regression's kernel.

KIP (Nguyen, Chen & Lee, arXiv:2011.00050; the KIP notebook of google-research) learns a small support
(X_s, Y_s) whose kernel regression fits real target batches:
L = 1/2 mean (Y_t - K_ts (K_ss + lambda I)^-1 Y_s)^2, lambda = reg * tr(K_ss) / n_s, in float64, by Adam
on X_s (and Y_s with ``learn_labels``). Label Solve keeps X_s and takes the Y_s that minimize L exactly:
a least-squares problem in Y_s. Images stay in pixel space; the kernel sees them through the model's
normalization, as the kernel-regression model does.
"""

from __future__ import annotations

import torch

from deepscope import ConfigError, SyntheticData

from .krr import KernelRegression, encode_targets

SEED_OFFSET = 4000  # the distillers' private generator: run seed + 4000 (or their own `seed`)


def ridge_system(k_ss: torch.Tensor, reg: float) -> torch.Tensor:
    """K_ss + lambda I with lambda = reg * tr(K_ss) / n: the system every KIP-style solve inverts."""
    n = len(k_ss)
    lam = reg * torch.trace(k_ss) / n
    return k_ss + lam * torch.eye(n, dtype=k_ss.dtype, device=k_ss.device)


def kip_loss(kernel, xs: torch.Tensor, ys: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor,
             reg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """KIP's loss 1/2 mean (Y_t - K_ts (K_ss + lambda I)^-1 Y_s)^2 and the predictions on the target."""
    k_ss, k_ts = kernel(xs), kernel(xt, xs)
    preds = k_ts @ torch.linalg.solve(ridge_system(k_ss, reg), ys.to(k_ss.dtype))
    return 0.5 * (preds - yt.to(preds.dtype)).pow(2).mean(), preds


def solve_labels(kernel, xs: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor, reg: float) -> torch.Tensor:
    """The Y_s minimizing KIP's loss for fixed X_s: least squares of A Y_s = Y_t, A = K_ts (K_ss + lambda I)^-1."""
    with torch.no_grad():
        k_ss, k_ts = kernel(xs), kernel(xt, xs)
        a = torch.linalg.solve(ridge_system(k_ss, reg), k_ts.T).T  # K_ts (K_ss + lambda I)^-1; the system is symmetric
        return torch.linalg.lstsq(a.cpu(), yt.to(a.dtype).cpu()).solution.to(a.device)


def predicted_classes(preds: torch.Tensor) -> torch.Tensor:
    """Classes of regression outputs: the sign of a single (+-1) output, else the argmax."""
    return (preds[:, 0] > 0).long() if preds.shape[1] == 1 else preds.argmax(1)


def hard_classes(y: torch.Tensor) -> torch.Tensor:
    """Class indices of hard labels, of per-class rows (argmax), or of a single +-1 column (its sign)."""
    if not y.is_floating_point():
        return y
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(1)
    return (y.reshape(-1) > 0).long()


def class_balanced_draw(y: torch.Tensor, per_class: int, num_classes: int,
                        generator: torch.Generator) -> torch.Tensor:
    """``per_class`` distinct random indices of every class (class 0's first), or all of a smaller class."""
    chosen = []
    for c in range(num_classes):
        members = (y == c).nonzero().flatten()
        if len(members) == 0:
            raise ConfigError(f"class {c} has no training images, so no class-balanced support can be drawn; "
                              "check [data] classes", key="ipc")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen)


def _kernel_model(state, spec):
    """The Network around a kernel-regression body built from ``spec`` (the distiller's ``krr``)."""
    model = state.build_model(spec, seed=state.seed)
    if not isinstance(model.body, KernelRegression):
        raise ConfigError(f"krr must be a kernel-regression model, not {type(model.body).__name__}: write "
                          "krr = { use = \"kernel-regression\", kernel = \"analytic-ntk\", reg = 1e-6 }", key="krr")
    return model


def _hard_train(state):
    x, y = state.data.tensors("train")
    if y.is_floating_point():
        raise ConfigError("kip and label-solve distil a real training split with hard labels; this stage's "
                          "data has float labels (a distilled set): drop `data` from the stage", key="data")
    return x, y


def _test_accuracy(model, xs, ys, state, test_n) -> float:
    """Accuracy on real test images of the KRR fitted on the support (xs, ys)."""
    body = model.body
    with torch.no_grad():
        body.fit(model.to_input(xs), ys)
        x, y = state.data.tensors("test", test_n)
        preds = torch.cat([body.regress(model.to_input(x[i:i + 500].to(state.device)))
                           for i in range(0, len(x), 500)])
    return (predicted_classes(preds).cpu() == y).double().mean().item()


class KIP:
    """The ``kip`` distiller: a step loop of Adam on the support, checkpointed by ``ctx.step_end``.

    Subclasses change where the target loss is taken by overriding :meth:`target_points` (robust-data's
    adversarial KIP moves the targets to adversarial points of the current predictor).
    """

    method = "kip"  # recorded in the set's extras

    def __init__(self, config):
        self.config = config

    def target_points(self, kernel, support, labels, xt, yt, reg, generator):
        """The points at which the target loss is taken, and extra metrics: here the targets themselves."""
        return xt, {}

    def distill(self, state, ctx) -> SyntheticData:
        cfg, k = self.config, state.info.num_classes
        model = _kernel_model(state, cfg.krr)
        body = model.body
        x, y = _hard_train(state)
        seed = cfg.seed if cfg.seed is not None else state.seed + SEED_OFFSET
        gen = torch.Generator().manual_seed(seed)
        init = class_balanced_draw(y, cfg.ipc, k, gen)
        support = x[init].to(state.device, torch.float64).clone().requires_grad_(True)
        hard = y[init].clone()
        labels = encode_targets(hard, k, body.config.targets).to(state.device).requires_grad_(cfg.learn_labels)
        opt = torch.optim.Adam([support, labels] if cfg.learn_labels else [support], lr=cfg.lr)
        saved = {"optimizer": opt, "generator": gen, "support": support, "labels": labels}
        per_class = max(cfg.target_batch // k, 1)
        reg = body.config.reg

        def kernel(a, b=None):
            return body.kernel(model.to_input(a), None if b is None else model.to_input(b))

        for step in range(ctx.resume(**saved), cfg.steps):
            idx = class_balanced_draw(y, per_class, k, gen)
            xt = x[idx].to(state.device, torch.float64)
            yt = encode_targets(y[idx], k, body.config.targets).to(state.device)
            points, extra = self.target_points(kernel, support, labels, xt, yt, reg, gen)
            loss, preds = kip_loss(kernel, support, labels, points, yt, reg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if cfg.clamp:
                with torch.no_grad():
                    support.clamp_(0.0, 1.0)
            metrics = {"loss": loss.item(),
                       "target_acc": (predicted_classes(preds.detach()).cpu() == y[idx]).double().mean().item(),
                       **extra}
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0:
                metrics["test_acc"] = _test_accuracy(model, support.detach(), labels.detach(), state, cfg.test_n)
            ctx.step_end(metrics, checkpoint=saved, synthetic=self._result(support, labels, hard, seed))
        result = self._result(support, labels, hard, seed)
        ctx.log_metrics({"final_test_acc": _test_accuracy(model, support.detach(), labels.detach(), state,
                                                          cfg.test_n)})
        return result

    def _result(self, support, labels, hard, seed) -> SyntheticData:
        extras = {"method": self.method, "seed": seed}
        if self.config.learn_labels:
            return SyntheticData(support.detach().float().cpu(), labels.detach().float().cpu(),
                                 label_kind="regression", extras=extras)
        return SyntheticData(support.detach().float().cpu(), hard.clone(), extras=extras)


class LabelSolve:
    """The ``label-solve`` distiller: a fixed support, the loss-minimizing labels in closed form."""

    def __init__(self, config):
        self.config = config

    def distill(self, state, ctx) -> SyntheticData:
        cfg, k = self.config, state.info.num_classes
        model = _kernel_model(state, cfg.krr)
        body = model.body
        x, y = _hard_train(state)
        seed = cfg.seed if cfg.seed is not None else state.seed + SEED_OFFSET
        xs, hard = self._support(state, x, y, k, seed)
        idx = torch.arange(len(y)) if cfg.target_n is None else \
            class_balanced_draw(y, max(cfg.target_n // k, 1), k, torch.Generator().manual_seed(seed + 1))
        xt = x[idx].to(state.device, torch.float64)
        yt = encode_targets(y[idx], k, body.config.targets).to(state.device)

        def kernel(a, b=None):
            return body.kernel(model.to_input(a), None if b is None else model.to_input(b))

        xs = xs.to(state.device, torch.float64)
        with torch.no_grad():
            before = kip_loss(kernel, xs, encode_targets(hard, k, body.config.targets).to(state.device), xt, yt,
                              body.config.reg)[0].item()
            labels = solve_labels(kernel, xs, xt, yt, body.config.reg)
            after = kip_loss(kernel, xs, labels, xt, yt, body.config.reg)[0].item()
        ctx.log_metrics({"loss_before": before, "loss": after, "targets": len(idx),
                         "test_acc": _test_accuracy(model, xs, labels, state, cfg.test_n)})
        return SyntheticData(xs.float().cpu(), labels.float().cpu(), label_kind="regression",
                             extras={"method": "label-solve", "seed": seed})

    def _support(self, state, x, y, k, seed):
        if self.config.support == "random-real":
            idx = class_balanced_draw(y, self.config.ipc, k, torch.Generator().manual_seed(seed))
            return x[idx], y[idx]
        try:
            chosen = state.synthetic_set(self.config.support)
        except LookupError as exc:
            raise ConfigError(f"{exc}. Set support to \"random-real\", \"synthetic\" or \"synthetic/<stage name>\" "
                              "of an earlier distill stage.", key="support") from None
        if chosen.space != "pixel":
            raise ConfigError("label-solve needs a pixel-space support; this set is in input space", key="support")
        return chosen.x, hard_classes(chosen.y)
