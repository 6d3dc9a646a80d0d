"""The ``neural-collapse`` and ``ncc-accuracy`` probes."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any

import torch

from deepscope import ConfigError

from deepscope_standard import recorded_perturbations

from .measure import attacked_inputs, class_means, leaps, noisy_inputs, scatter, target_labels
from .metrics import collapse_metrics, simplex_alignment
from .taps import PENULTIMATE, FeatureTaps

HISTORY_KEY = "deepscope_collapse/history"


@contextmanager
def private_rng(state):
    """Seeded randomness (attack starts, noise) that leaves the training run's RNG stream untouched.

    A periodic probe then never changes the trajectory it observes.
    """
    devices = [state.device] if state.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(state.seed * 1000 + 17 + state.epoch)
        yield


def measured_sets(cfg: Any, state: Any, x: torch.Tensor, y: torch.Tensor,
                  nc_labels: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """clean, perturbed (attack) and noise inputs with the labels the metrics use.

    With ``nc_labels`` a targeted attack's set carries the target labels (as the
    paper computes NC); otherwise every set keeps the true labels (accuracy).
    """
    sets = {"clean": (x, y)}
    num_classes = state.info.num_classes
    if cfg.attack is not None:
        target = target_labels(y, num_classes) if cfg.targeted else None
        attack = cfg.attack.build()
        x_adv = attacked_inputs(attack, state.model, x, y, target, cfg.batch_size, state.device)
        sets["perturbed"] = (x_adv, target if (cfg.targeted and nc_labels) else y)
    if cfg.noise is not None:
        eps = cfg.noise_eps if cfg.noise_eps is not None else cfg.attack.config.eps
        gen = torch.Generator().manual_seed(state.seed * 1000 + 17 + state.epoch)
        sets["noise"] = (noisy_inputs(x, cfg.noise, eps, gen), y)
    return sets


@torch.no_grad()
def true_label_accuracy(model, x: torch.Tensor, y: torch.Tensor, batch_size: int, device) -> float:
    hits = sum(int((model(x[i:i + batch_size].to(device)).argmax(1).cpu() == y[i:i + batch_size]).sum())
               for i in range(0, len(x), batch_size))
    return hits / max(len(x), 1)


def metric_prefix(set_name: str, layer: str) -> str:
    return f"{set_name}/" if layer == PENULTIMATE else f"{set_name}/layer/{layer}/"


RELIABILITY_COLUMNS = ("nc1", "cdnv", "etf_error", "ncc_label_acc", "ncc_clean_acc", "fooled", "leap",
                       "stay", "align/angle_centred")


def reliability_rows(metrics: dict[str, float], set_names: list[str], layers: list[str]) -> list[dict]:
    """One row per (set, layer), in forward order: the per-layer simplex reliability table."""
    rows = []
    for name in set_names:
        for depth, layer in enumerate(layers):
            prefix = metric_prefix(name, layer)
            row = {"set": name, "depth": depth, "layer": layer, "net_acc": metrics[f"{name}/net_acc"]}
            row.update({col: metrics[prefix + col] for col in RELIABILITY_COLUMNS if prefix + col in metrics})
            rows.append(row)
    return rows


class NeuralCollapseProbe:
    """NC1-NC4 (and clean-vs-perturbed simplex alignment) at the penultimate layer or every block."""

    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict[str, float]:
        with private_rng(state):
            return self._measure(state, ctx)

    def _measure(self, state, ctx) -> dict[str, float]:
        cfg = self.config
        model = state.model
        x, y = state.data.tensors(cfg.split, cfg.n_examples)
        sets = measured_sets(cfg, state, x, y, nc_labels=True)
        clean_rows = {name: (x, y) for name in sets}
        if cfg.train_perturbations:
            kept = recorded_perturbations(state)
            if kept is None:
                raise ConfigError("'train_perturbations' is true but no training perturbations were kept: train "
                                  "first with a trainer that keeps them (use = \"adversarial\" or \"trades\" with "
                                  "keep_perturbations = N > 0), or set train_perturbations = false", key="train_perturbations")
            sets["train_adv"] = (kept[1], kept[2])
            clean_rows["train_adv"] = (kept[0], kept[2])
        taps = FeatureTaps(model, cfg.layers, cfg.spatial)
        weight = model.classifier.weight
        metrics: dict[str, float] = {}
        means = {}
        per_class: dict[str, dict] = {}
        with ctx.eval_mode(model):
            for name, (xs, labels) in sets.items():
                means[name] = class_means(taps, xs, labels, state.info.num_classes, cfg.batch_size, state.device)
                scat, acc = scatter(taps, means[name], xs, labels, cfg.batch_size, state.device)
                if labels is y or name == "train_adv":
                    metrics[f"{name}/net_acc"] = acc
                else:  # targeted: NC uses the target labels, so `acc` is the attack's success rate
                    metrics[f"{name}/target_success"] = acc
                    metrics[f"{name}/net_acc"] = true_label_accuracy(model, xs, y, cfg.batch_size, state.device)
                for layer in taps.names:
                    nc = collapse_metrics(means[name][layer], scat[layer],
                                          weight if layer == PENULTIMATE else None, cfg.divide_by_classes)
                    metrics.update({metric_prefix(name, layer) + k: v for k, v in nc.items()})
                if name == "clean":
                    continue
                leap = leaps(taps, means["clean"], clean_rows[name][0], xs, clean_rows[name][1], cfg.batch_size,
                             state.device)
                for layer in taps.names:
                    metrics.update({metric_prefix(name, layer) + k: v for k, v in leap[layer].metrics().items()})
                    align = simplex_alignment(means["clean"][layer], means[name][layer])
                    metrics.update({metric_prefix(name, layer) + f"align/{k}": float(v.mean())
                                    for k, v in align.items()})
                    if layer == PENULTIMATE:
                        per_class[name] = {k: v.tolist() for k, v in align.items()}
        self._record(state, ctx, metrics, per_class, taps.names)
        ctx.log_table(f"layer_reliability_epoch{state.epoch:04d}", reliability_rows(metrics, list(sets), taps.names))
        return metrics

    def _record(self, state, ctx, metrics, per_class, layers) -> None:
        history = state.extras.setdefault(HISTORY_KEY, {}).setdefault(ctx.prefix, [])
        history.append({"epoch": state.epoch, **metrics})
        if per_class:
            ctx.log_artifact(f"alignment_epoch{state.epoch:04d}.json", json.dumps(per_class, indent=1))
        ctx.log_artifact("nc_history.json", json.dumps(history, indent=1))
        if not self.config.plots:
            return
        from .plots import layer_profile_figure, trajectory_figure

        if len(history) >= 2:
            ctx.log_figure(trajectory_figure(history), "nc_trajectory.png")
        if len(layers) > 1:
            ctx.log_figure(layer_profile_figure(metrics, layers, state.epoch), f"nc_layers_epoch{state.epoch:04d}.png")


class NCCAccuracyProbe:
    """Accuracy of the nearest-clean-class-centre classifier on clean, perturbed and noisy data."""

    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict[str, float]:
        with private_rng(state):
            return self._measure(state, ctx)

    def _measure(self, state, ctx) -> dict[str, float]:
        cfg = self.config
        model = state.model
        taps = FeatureTaps(model, cfg.layers, cfg.spatial)
        xc, yc = state.data.tensors(cfg.centre_split, cfg.n_centre)
        x, y = state.data.tensors(cfg.split, cfg.n_examples)
        sets = measured_sets(cfg, state, x, y, nc_labels=False)
        metrics: dict[str, float] = {}
        with ctx.eval_mode(model):
            centres = class_means(taps, xc, yc, state.info.num_classes, cfg.batch_size, state.device)
            for name, (xs, labels) in sets.items():
                scat, acc = scatter(taps, centres, xs, labels, cfg.batch_size, state.device)
                metrics[f"{name}/net_acc"] = acc
                for layer in taps.names:
                    s = scat[layer]
                    prefix = metric_prefix(name, layer)
                    metrics[prefix + "ncc_acc"] = s.ncc_correct / max(1, s.n)
                    metrics[prefix + "ncc_net_agreement"] = s.ncc_agree / max(1, s.n_logits)
        return metrics
