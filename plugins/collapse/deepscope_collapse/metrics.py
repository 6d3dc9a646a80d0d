"""Neural-collapse statistics, accumulated batch by batch (no feature matrix is ever stored).

Pass 1 (:class:`MeanAccumulator`) sums features per class. Pass 2
(:class:`ScatterAccumulator`) knows the means and accumulates the within-class
covariance *projected on the span of the centred class means*, plus the
nearest-class-centre predictions. The projection is what NC1 needs:
with M = [mu_c - mu_G] (d x C) and Sb = M M^T / C,

    Tr(Sw Sb^+) = C * Tr(M^+ Sw M^+T) = C / N * sum_i ||M^+ (h_i - mu_{y_i})||^2,

so memory is O(C d) instead of the O(d^2) of the full Sw, and the result equals
``trace(Sw @ pinv(Sb))`` of the reference code (tested against it). All sums are
float64.
"""

from __future__ import annotations

import math

import torch


class MeanAccumulator:
    """Per-class counts and feature sums; gives class means and the sample-weighted global mean."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.counts: torch.Tensor | None = None
        self.sums: torch.Tensor | None = None

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        h = features.detach().flatten(1).double()
        if self.sums is None:
            self.sums = torch.zeros(self.num_classes, h.shape[1], dtype=torch.float64, device=h.device)
            self.counts = torch.zeros(self.num_classes, dtype=torch.float64, device=h.device)
        labels = labels.to(h.device)
        self.sums.index_add_(0, labels, h)
        self.counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))

    @property
    def present(self) -> torch.Tensor:
        """Classes with at least one example (only those take part in the metrics)."""
        return self.counts > 0

    def means(self) -> torch.Tensor:
        """(C, d) class means; rows of absent classes are zero."""
        return self.sums / self.counts.clamp_min(1).unsqueeze(1)

    def global_mean(self) -> torch.Tensor:
        return self.sums.sum(0) / self.counts.sum()


def projector(centred_means: torch.Tensor) -> torch.Tensor:
    """M^+ (C x d) for M = centred_means^T, with the cutoff scipy's ``pinv(Sb)`` implies.

    scipy drops eigenvalues of Sb = M M^T / C below max(d, d) * eps * largest;
    those are squared singular values of M, hence the square root here.
    """
    d = centred_means.shape[1]
    rtol = math.sqrt(d * torch.finfo(torch.float64).eps)
    return torch.linalg.pinv(centred_means.T.double(), rtol=rtol)


class ScatterAccumulator:
    """Pass 2: projected within-class scatter, and NCC predictions against labels and logits."""

    def __init__(self, means: MeanAccumulator):
        self.present = means.present
        self.means = means.means()[self.present]  # (C', d)
        self.class_ids = torch.nonzero(self.present).flatten()
        self.global_mean = means.global_mean()
        self.proj = projector(self.means - self.global_mean)  # (C', d)
        # map labels to rows of self.means
        self.row_of = torch.full((means.num_classes,), -1, dtype=torch.long, device=self.means.device)
        self.row_of[self.class_ids] = torch.arange(len(self.class_ids), device=self.means.device)
        self.projected_sq = 0.0
        self.trace_sw = 0.0
        self.class_sq = torch.zeros(len(self.class_ids), dtype=torch.float64, device=self.means.device)
        self.n = 0
        self.ncc_correct = 0
        self.ncc_agree = 0
        self.n_logits = 0

    def ncc_predict(self, features: torch.Tensor) -> torch.Tensor:
        """Nearest class centre (Euclidean), as class ids."""
        h = features.detach().flatten(1).double()
        dist = torch.cdist(h, self.means.to(h.device))
        return self.class_ids.to(h.device)[dist.argmin(1)]

    def update(self, features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None) -> None:
        h = features.detach().flatten(1).double()
        labels = labels.to(h.device)
        residual = h - self.means.to(h.device)[self.row_of.to(h.device)[labels]]
        self.projected_sq += float((residual @ self.proj.to(h.device).T).pow(2).sum())
        self.trace_sw += float(residual.pow(2).sum())
        rows = self.row_of.to(h.device)[labels]
        self.class_sq = self.class_sq.to(h.device).index_add_(0, rows, residual.pow(2).sum(1))
        self.n += len(labels)
        pred = self.ncc_predict(h)
        self.ncc_correct += int((pred == labels).sum())
        if logits is not None:
            self.ncc_agree += int((pred == logits.argmax(1).to(pred.device)).sum())
            self.n_logits += len(labels)


def coherence(vectors: torch.Tensor) -> float:
    """Mean |cos(v_c, v_c') + 1/(C-1)| over ordered pairs c != c' (0 for a simplex ETF)."""
    c = vectors.shape[0]
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    gram = unit @ unit.T + 1.0 / (c - 1)
    gram.fill_diagonal_(0.0)
    return float(gram.abs().sum() / (c * (c - 1)))


def equinorm(vectors: torch.Tensor) -> float:
    """std / mean of the row norms (torch's unbiased std, as the Papyan-style code)."""
    norms = vectors.norm(dim=1)
    return float(norms.std() / norms.mean())


def self_duality(weight: torch.Tensor, centred_means: torch.Tensor) -> float:
    """||W / ||W||_F - M^T / ||M||_F||_F^2 with W (C x d) and centred means (C x d)."""
    w = weight.double()
    m = centred_means.double().to(w.device)
    return float((w / w.norm() - m / m.norm()).pow(2).sum())


def class_variances(means: MeanAccumulator, scatter: ScatterAccumulator) -> torch.Tensor:
    """Per present class, the mean squared distance of its features to its class mean."""
    counts = means.counts[scatter.present].to(scatter.class_sq.device)
    return scatter.class_sq / counts


def cdnv(class_means: torch.Tensor, variances: torch.Tensor) -> float:
    """Class-distance normalized variance (Galanti et al., 2022), averaged over pairs c < c'.

    CDNV(c, c') = (Var_c + Var_c') / (2 ||mu_c - mu_c'||^2); it goes to 0 under
    collapse and, unlike NC1, needs no pseudo-inverse.
    """
    mu = class_means.double()
    v = variances.double().to(mu.device)
    i, j = torch.triu_indices(len(mu), len(mu), offset=1, device=mu.device)
    dist_sq = (mu[i] - mu[j]).pow(2).sum(1)
    return float(((v[i] + v[j]) / (2.0 * dist_sq)).mean())


def etf_error(vectors: torch.Tensor) -> float:
    """|| G / ||G||_F - (I - 11^T / C) / sqrt(C - 1) ||_F with G the Gram matrix of the rows.

    The normalized Gram matrix of a simplex ETF is (I - 11^T/C) / sqrt(C - 1), so
    the error is 0 exactly there, whatever the scale or rotation (Zhu et al., 2021).
    """
    v = vectors.double()
    c = v.shape[0]
    gram = v @ v.T
    target = (torch.eye(c, dtype=torch.float64, device=v.device) - 1.0 / c) / math.sqrt(c - 1)
    return float((gram / gram.norm() - target).norm())


def collapse_metrics(means: MeanAccumulator, scatter: ScatterAccumulator, weight: torch.Tensor | None = None,
                     divide_by_classes: bool = True) -> dict[str, float]:
    """NC1-NC4, CDNV and the ETF error from the two accumulators.

    NC2 on W, the ETF error of W and NC3 only when the classifier ``weight`` is given.
    """
    present = scatter.present
    c = int(present.sum())
    centred = scatter.means - scatter.global_mean
    nc1_over_c = scatter.projected_sq / scatter.n  # Tr(Sw Sb^+) / C
    out = {
        "nc1": nc1_over_c if divide_by_classes else nc1_over_c * c,
        "nc2_equinorm": equinorm(centred),
        "nc2_equiangular": coherence(centred),
        "within_trace": scatter.trace_sw / scatter.n,
        "ncc_label_acc": scatter.ncc_correct / scatter.n,
        "cdnv": cdnv(scatter.means, class_variances(means, scatter)),
        "etf_error": etf_error(centred),
    }
    if scatter.n_logits:
        out["nc4"] = 1.0 - scatter.ncc_agree / scatter.n_logits
    if weight is not None:
        w = weight.detach().double()[present.to(weight.device)]
        out["nc2_equinorm_w"] = equinorm(w)
        out["nc2_equiangular_w"] = coherence(w)
        out["etf_error_w"] = etf_error(w)
        out["nc3"] = self_duality(w, centred)
    return out


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))


def simplex_alignment(clean: MeanAccumulator, perturbed: MeanAccumulator) -> dict[str, torch.Tensor]:
    """Per-class distance and angle (degrees) between clean and perturbed class means.

    Uncentred (raw means) and centred (each set minus its own global mean), plus
    the shift of the global mean. Only classes present in both sets count.
    """
    both = clean.present & perturbed.present
    mc, mp = clean.means()[both], perturbed.means()[both]
    gc, gp = clean.global_mean(), perturbed.global_mean()
    cc, cp = mc - gc, mp - gp
    return {
        "dist": (mc - mp).norm(dim=1),
        "rel_dist": (mc - mp).norm(dim=1) / mc.norm(dim=1),
        "angle": _angle_deg(mc, mp),
        "dist_centred": (cc - cp).norm(dim=1),
        "rel_dist_centred": (cc - cp).norm(dim=1) / cc.norm(dim=1),
        "angle_centred": _angle_deg(cc, cp),
        "global_shift": (gc - gp).norm().reshape(1),
        "global_angle": _angle_deg(gc, gp).reshape(1),
    }
