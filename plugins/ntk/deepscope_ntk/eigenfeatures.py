"""Probe ``ntk-eigenfeatures``: which eigen-directions of the training kernel carry robust features.

With K + lambda I = sum_i l_i v_i v_i^T (l_0 >= l_1 >= ...), the kernel predictor splits into features
f_i(x) = K(x, X) v_i v_i^T Y / l_i that sum to f(x) = K(x, X)(K + lambda I)^-1 Y. On the training set
f_i(X) = (l_i - lambda) / l_i v_i (v_i^T Y): orthogonal directions. Tsilivis & Kempe (arXiv:2210.05577)
measure each feature's accuracy (usefulness) and its accuracy under an attack against that feature alone
(robustness), and find robust features in the top eigenspace.
"""

from __future__ import annotations

import torch
from torch import nn

from deepscope import ConfigError

from .krr import KernelRegression


def eigen_decomposition(body: KernelRegression) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eigenvalues l_i of K + lambda I (descending), eigenvectors (columns), and label energies (v_i^T Y)^2."""
    with torch.no_grad():
        gram = body.kernel(body.support_x)
        gram = (gram + gram.T) / 2 + body.lam * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
        values, vectors = torch.linalg.eigh(gram)
    values, vectors = values.flip(0), vectors.flip(1)
    energy = (vectors.T @ body.targets.to(vectors.device)).pow(2).sum(1)
    return values, vectors, energy


def feature_coefficients(body: KernelRegression, values, vectors, index: int) -> torch.Tensor:
    """c_i = v_i v_i^T Y / l_i, so that f_i(x) = K(x, X) c_i."""
    v = vectors[:, index:index + 1]
    return v @ (v.T @ body.targets.to(v.device)) / values[index]


class Feature(nn.Module):
    """One eigen-feature as a model on pixels: the network's normalization, K(., X) c_i, the body's logits."""

    def __init__(self, network: nn.Module, coefficients: torch.Tensor):
        super().__init__()
        self.network, self.coefficients = network, coefficients

    def regress(self, x: torch.Tensor) -> torch.Tensor:
        body = self.network.body
        return body.kernel(self.network.to_input(x), body.support_x.to(x.device)) @ self.coefficients

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.body.as_logits(self.regress(x), x)


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when either side is constant."""
    ra, rb = _ranks(torch.as_tensor(a, dtype=torch.float64)), _ranks(torch.as_tensor(b, dtype=torch.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = ra.norm() * rb.norm()
    return float("nan") if denom == 0 else float((ra @ rb) / denom)


def _ranks(v: torch.Tensor) -> torch.Tensor:
    ranks = torch.empty_like(v)
    for value in v.unique():
        where = v == value
        below = (v < value).sum()
        ranks[where] = below + (where.sum() + 1) / 2  # ties share the mean of their positions
    return ranks


class EigenfeaturesProbe:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict:
        cfg, network = self.config, state.model
        body = network.body
        if not isinstance(body, KernelRegression) or not body.fitted:
            raise ConfigError("ntk-eigenfeatures decomposes a fitted kernel-regression: use [model] use = "
                              "\"kernel-regression\" and a kernel-fit train stage before this probe", key="use")
        n = len(body.support_x)
        if max(cfg.indices) >= n:
            raise ConfigError(f"indices go up to {max(cfg.indices)}, but the training kernel has only {n} "
                              f"eigenvalues (support of {n}); keep indices below {n}", key="indices")
        values, vectors, energy = eigen_decomposition(body)
        attack = cfg.attack.build()
        x_all, y_all = state.data.tensors("test", cfg.n_test)
        rows = []
        with ctx.eval_mode():
            for index in cfg.indices:
                feature = Feature(network, feature_coefficients(body, values, vectors, index))
                clean = adv = 0
                for start in range(0, len(x_all), cfg.batch_size):
                    x = x_all[start:start + cfg.batch_size].to(state.device)
                    y = y_all[start:start + cfg.batch_size].to(state.device)
                    x_adv = attack.perturb(feature, x, y)
                    with torch.no_grad():
                        clean += int((feature(x).argmax(1) == y).sum())
                        adv += int((feature(x_adv).argmax(1) == y).sum())
                rows.append({"index": index, "eigenvalue": values[index].item(),
                             "label_energy": (energy[index] / energy.sum()).item(),
                             "acc": clean / len(x_all), "robust_acc": adv / len(x_all)})
        ctx.log_table("eigenfeatures", rows)
        if cfg.gradient_images and state.tracker is not None:
            self._gradient_figure(ctx, network, body, values, vectors, x_all[:1].to(state.device),
                                  y_all[:1].to(state.device))
        return self._summary(rows)

    def _summary(self, rows: list[dict]) -> dict:
        k = min(self.config.summary_k, len(rows))
        by_index = sorted(rows, key=lambda r: r["index"])
        metrics = {}
        for row in rows:
            metrics[f"acc_{row['index']}"] = row["acc"]
            metrics[f"robust_acc_{row['index']}"] = row["robust_acc"]
        metrics[f"robust_acc_top{k}"] = sum(r["robust_acc"] for r in by_index[:k]) / k
        metrics[f"robust_acc_bottom{k}"] = sum(r["robust_acc"] for r in by_index[-k:]) / k
        metrics[f"acc_top{k}"] = sum(r["acc"] for r in by_index[:k]) / k
        metrics[f"acc_bottom{k}"] = sum(r["acc"] for r in by_index[-k:]) / k
        if len(rows) > 1:
            indices = [r["index"] for r in rows]
            metrics["spearman_index_robust_acc"] = spearman(indices, [r["robust_acc"] for r in rows])
            metrics["spearman_index_acc"] = spearman(indices, [r["acc"] for r in rows])
        return metrics

    def _gradient_figure(self, ctx, network, body, values, vectors, x, y) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import torch.nn.functional as F

        chosen = self.config.indices[:self.config.gradient_images]
        fig, axes = plt.subplots(1, len(chosen) + 1, figsize=(2.2 * (len(chosen) + 1), 2.4), squeeze=False)
        axes[0][0].imshow(x[0].mean(0).detach().cpu().numpy(), cmap="gray")
        axes[0][0].set_title("input")
        for ax, index in zip(axes[0][1:], chosen):
            feature = Feature(network, feature_coefficients(body, values, vectors, index))
            probe = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(feature(probe), y), probe)
            ax.imshow(grad[0].mean(0).cpu().numpy(), cmap="RdBu")
            ax.set_title(f"feature {index}")
        for ax in axes[0]:
            ax.axis("off")
        ctx.log_figure(fig, "eigenfeature_gradients.png")
