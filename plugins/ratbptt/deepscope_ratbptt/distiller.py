"""The ``rat-bptt`` and ``boost-dd`` distillers: the meta loop around :func:`deepscope_ratbptt.unroll.unroll`.

One meta-step (the official ``Distill.forward`` plus ``train``): a fresh network, ``start`` graph-free
inner steps and ``window`` differentiable ones on augmented synthetic batches, the cross-entropy of the
result on an augmented real batch, its gradient with respect to the images (and labels), the
gradient norm clipped at twice its running EMA, an Adam step, labels clipped at 0. The synthetic set
lives in the model's input space (after normalization and any ZCA), as the official embedding does.

Boost-DD runs the same loop block after block on one preallocated set: block ``b``'s images are
sampled into each inner batch, the earlier blocks' images join every batch whole and move at
``beta`` x lr (their Adam rows have lr 0 when ``beta = 0``, so they stay bit-identical), the later
blocks wait. The outer Adam and the EMA restart at each block.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.func import functional_call

from deepscope import ConfigError, SavedTensorMeter, SyntheticData
from deepscope_standard import adam_step, flip_rotate, log_synthetic_grid, random_real

from .sampling import InnerSampler, RealBatches, unit_norm_noise
from .unroll import InnerOptimizer, unroll
from .windows import WindowSchedule

NET_SEED = 10_000   # the fresh network of global meta-step s is initialized from run seed + 10000 + s
DRAW_SEED = 4_000   # the distiller's generators: run seed + 4000 (+1, +2, +3 for the other streams)


class RatBPTT:
    """RaT-BPTT: one block of ``ipc`` images per class."""

    def __init__(self, config):
        self.config = config

    def blocks(self) -> list[int]:
        return [self.config.ipc]

    def beta(self) -> float:
        return 0.0

    def distill(self, state, ctx) -> SyntheticData:
        return MetaLoop(self.config, self.blocks(), self.beta(), state, ctx).run()


class BoostDD(RatBPTT):
    """Boost-DD: ``blocks`` of images per class, distilled in turn."""

    def blocks(self) -> list[int]:
        return list(self.config.blocks)

    def beta(self) -> float:
        return float(self.config.beta)


class MetaLoop:
    def __init__(self, config, blocks: list[int], beta: float, state, ctx):
        self.c, self.blocks, self.beta, self.state, self.ctx = config, blocks, beta, state, ctx
        self.k = state.info.num_classes
        self.device = state.device
        self.real_x, real_y = state.data.tensors("train")
        self.real_y = real_y.long()
        if self.real_y.dim() != 1:
            raise ConfigError("rat-bptt distills from hard class labels; the stage's training data has "
                              f"labels of shape {tuple(real_y.shape)}.", key="data")
        self.gens = [torch.Generator().manual_seed(state.seed + DRAW_SEED + i) for i in range(4)]
        self.block_of = torch.cat([torch.full((b * self.k,), i) for i, b in enumerate(blocks)])
        self.classes = torch.cat([torch.arange(self.k).repeat_interleave(b) for b in blocks])
        probe = state.build_model(seed=state.seed)
        self.input_shape = tuple(probe.to_input(self.real_x[:1].to(self.device)).shape[1:])
        self.images = self._init_images(probe).to(self.device).requires_grad_()
        labels = F.one_hot(self.classes, self.k).float() if config.learn_labels else self.classes.clone()
        self.labels = labels.to(self.device).requires_grad_(config.learn_labels)
        self.adam = {f"{n}_{m}": torch.zeros_like(t) for n, t in self._learned().items() for m in ("m", "v")}
        self.windows = WindowSchedule(config.start, config.unroll, config.window, self.gens[1], config.moving_patience)
        self.real = RealBatches(len(self.real_x), config.real_batch, self.gens[2])
        self.sampler = InnerSampler(self.classes, self.k, config.batch_per_class, config.classes_per_batch,
                                    self.gens[3])
        self.progress = {"ema": None, "adam_step": 0}
        self.inner = InnerOptimizer(config.inner_optim, config.inner_lr, config.inner_momentum,
                                    config.inner_weight_decay, config.inner_adam_eps)

    # -- set-up ---------------------------------------------------------------
    def _init_images(self, probe) -> torch.Tensor:
        n = len(self.classes)
        if self.c.init == "unit-norm-noise":
            return unit_norm_noise(n, self.input_shape, self.gens[0])
        # one class-balanced draw of distinct images, dealt out to the blocks (class-major in each block)
        drawn = random_real(self.real_x, self.real_y, sum(self.blocks), self.k, self.gens[0]).view(self.k, -1)
        offsets = [0, *torch.tensor(self.blocks).cumsum(0).tolist()]
        idx = torch.cat([drawn[:, a:b].reshape(-1) for a, b in zip(offsets, offsets[1:])])
        with torch.no_grad():
            return probe.to_input(self.real_x[idx].to(self.device).float()).cpu()

    def _learned(self) -> dict[str, torch.Tensor]:
        return {"images": self.images, "labels": self.labels} if self.c.learn_labels else {"images": self.images}

    def checkpoint_objects(self) -> dict:
        return {"images": self.images, "labels": self.labels, **{f"adam_{k}": v for k, v in self.adam.items()},
                "windows": self.windows.state, "real_order": self.real.order, "real": self.real.progress,
                "progress": self.progress, **{f"generator_{i}": g for i, g in enumerate(self.gens)}}

    # -- the loop -------------------------------------------------------------
    def run(self) -> SyntheticData:
        c, ctx = self.c, self.ctx
        saved = self.checkpoint_objects()
        first = ctx.resume(**saved)
        total = c.meta_steps * len(self.blocks)
        for step in range(first, total):
            block = step // c.meta_steps
            if step % c.meta_steps == 0:
                self._start_block(block)
            elif step == first:
                self._enter_block(block)
            metrics = self.meta_step(step, block)
            if (step + 1) % c.log_every == 0 or step + 1 == total:
                ctx.print(f"  [dim]{ctx.prefix}[/] meta-step {step + 1}/{total}: meta_loss {metrics['meta_loss']:.4g}, "
                          f"meta_acc {metrics['meta_acc']:.3f}, window_start {metrics['window_start']:.0f}, "
                          f"{metrics['sec_per_step']:.2f} s/step")
            ctx.step_end(metrics, checkpoint=saved, synthetic=self.result())
        result = self.result()
        if c.grid and self.state.tracker is not None:
            log_synthetic_grid(ctx, result, self.state.info)
        return result

    def _enter_block(self, block: int) -> None:
        """The sampler's view of the set while block ``block`` is distilled."""
        self.sampler.set_active(self.block_of == block, self.block_of < block)

    def _start_block(self, block: int) -> None:
        self._enter_block(block)
        with torch.no_grad():
            for t in self.adam.values():
                t.zero_()
        self.progress.update(ema=None, adam_step=0)

    def _lr_rows(self, block: int) -> torch.Tensor:
        """Per-image outer lr: lr for the active block, beta x lr for earlier ones, 0 for later ones."""
        scale = torch.where(self.block_of == block, 1.0, torch.where(self.block_of < block, self.beta, 0.0))
        return (scale * self.c.lr).view(-1, *([1] * len(self.input_shape))).to(self.device)

    def meta_step(self, step: int, block: int) -> dict[str, float]:
        c = self.c
        began = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        real_idx, new_pass, pass_ends = self.real.next()
        start = self.windows.start(new_pass)
        meter = SavedTensorMeter()
        with meter.track() if self.device.type == "cpu" else nullcontext():
            meta_loss, logits, y_real, grads = self._meta_gradient(step, start, real_idx)
        norm = grads["images"].norm().item()
        ema, clipped = self._clip(grads, norm)
        self._outer_step(grads, block)
        self.windows.record(meta_loss.item(), pass_ends)
        metrics = {"meta_loss": meta_loss.item(), "meta_acc": (logits.argmax(1) == y_real).float().mean().item(),
                   "grad_norm": norm, "ema_norm": ema, "clipped": float(clipped), "window_start": float(start),
                   "block": float(block), "sec_per_step": time.perf_counter() - began}
        if self.device.type == "cuda":
            metrics["peak_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.device.type == "cpu":
            metrics["graph_mem_mb"] = meter.peak_mb
        return metrics

    def _meta_gradient(self, step: int, start: int, real_idx: torch.Tensor):
        """A fresh network, the unroll, the real-batch loss: (meta-loss, logits, real labels, gradients)."""
        c = self.c
        net = self.state.build_model(seed=self.state.seed + NET_SEED + step)
        net.train()
        body = net.body
        params = dict(body.named_parameters())
        buffers = {k: v.clone() for k, v in body.named_buffers()}
        final = unroll(body, params, self.inner, self._inner_batches, start=start, window=c.window,
                       buffers=buffers, checkpoint_inner=c.checkpoint_inner)
        with torch.no_grad():
            z_real = net.to_input(self.real_x[real_idx].to(self.device).float())
        z_real = self._augment(z_real, c.real_aug)
        logits = functional_call(body, {**final, **buffers}, (z_real,))
        y_real = self.real_y[real_idx].to(self.device)
        meta_loss = F.cross_entropy(logits, y_real)
        learned = self._learned()
        grads = dict(zip(learned, torch.autograd.grad(meta_loss, list(learned.values()))))
        return meta_loss, logits, y_real, grads

    def _inner_batches(self, differentiable: bool) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.sampler.indices().to(self.device)
        images = self.images if differentiable else self.images.detach()
        labels = self.labels if differentiable else self.labels.detach()
        return self._augment(images[idx], self.c.syn_aug), labels[idx]

    def _augment(self, x: torch.Tensor, kind: str) -> torch.Tensor:
        if kind == "none" or x.dim() != 4:
            return x
        return flip_rotate(x, self.gens[3])

    def _clip(self, grads: dict, norm: float) -> tuple[float, bool]:
        """The official EMA clipping: the EMA starts at the first norm, then ema -= (1 - coef)(ema - norm);
        the images' gradient is clipped to 2 x EMA (clip_grad_norm_'s rule, its 1e-6 included)."""
        ema = self.progress["ema"]
        ema = norm if ema is None else ema - (1 - self.c.clip_coef) * (ema - norm)
        self.progress["ema"] = ema
        if not self.c.clip:
            return ema, False
        coef = 2 * ema / (norm + 1e-6)
        if coef < 1:
            grads["images"] = grads["images"] * coef
            return ema, True
        return ema, False

    def _outer_step(self, grads: dict, block: int) -> None:
        """Adam(0.9, 0.999, eps 1e-8) on the images (per-image lr rows) and the labels (lr / label_lr_scale)."""
        learned = self._learned()
        lrs = {"images": self._lr_rows(block), "labels": self.c.lr / self.c.label_lr_scale}
        step = self.progress["adam_step"]
        with torch.no_grad():
            for name, tensor in learned.items():
                state = None if step == 0 else {"step": step, "exp_avg": {name: self.adam[f"{name}_m"]},
                                                "exp_avg_sq": {name: self.adam[f"{name}_v"]}}
                new, state = adam_step({name: tensor.detach()}, {name: grads[name]}, lrs[name], state=state)
                tensor.copy_(new[name])
                self.adam[f"{name}_m"].copy_(state["exp_avg"][name])
                self.adam[f"{name}_v"].copy_(state["exp_avg_sq"][name])
            if self.c.learn_labels:
                self.labels.clamp_(min=0)
        self.progress["adam_step"] = step + 1

    def result(self) -> SyntheticData:
        extras = {"method": "boost-dd" if len(self.blocks) > 1 else "rat-bptt", "blocks": list(self.blocks),
                  "block": self.block_of.clone(), "unroll": self.c.unroll, "window": self.c.window}
        return SyntheticData(self.images.detach().clone(), self.labels.detach().clone(), extras=extras,
                             label_kind="soft" if self.c.learn_labels else "hard", space="input")
