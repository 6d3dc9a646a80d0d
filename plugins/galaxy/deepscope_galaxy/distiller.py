"""The ``mtt`` and ``stm`` distillers: the meta loop around :func:`deepscope_galaxy.matching.unroll`.

One MTT iteration (the official ``distill.py``): the next expert of a shuffled cycle, a start epoch
t uniform in [0, T+), the student from theta*_t, ``syn_steps`` SGD steps on DSA-augmented synthetic
batches with the learnable ``syn_lr``, the normalized distance to theta*_{t+M}, one SGD step
(momentum 0.5) on the images and one on ``syn_lr``. STM (Guan et al.'s ``stage-MTT``): M = 1, the
start epoch cycles below a cap (or is uniform below it), the lr is learned as ``log_syn_lr`` (one,
or one per start epoch), and before each update the next stage (theta*_cap -> theta*_{cap+1}) is
matched without an update; :class:`deepscope_galaxy.stages.StageRule` turns those losses into the
cap's advances, the fine-tuning decay of lr_img and the stop. The set lives in the model's input
space (after normalization and any ZCA), as the official code's.

Every draw comes from private generators (run seed + 5000 + i), checkpointed with everything else.
"""

from __future__ import annotations

import math
import time

import torch

from deepscope import ConfigError, SyntheticData
from deepscope_standard import DSA, log_synthetic_grid, random_real

from .experts import load_or_train_experts
from .matching import batch_schedule, matching_loss, unroll
from .stages import StageRule

DRAW_SEED = 5_000  # generators: init, expert cycle and start epochs, batches, DSA seeds


class MTT:
    def __init__(self, config):
        self.config = config

    def distill(self, state, ctx) -> SyntheticData:
        return MTTLoop(self.config, state, ctx).run()


class STM(MTT):
    def distill(self, state, ctx) -> SyntheticData:
        return STMLoop(self.config, state, ctx).run()


class MTTLoop:
    method = "mtt"

    def __init__(self, config, state, ctx):
        self.c, self.state, self.ctx = config, state, ctx
        self.device = state.device
        self.k = state.info.num_classes
        real_x, real_y = state.data.tensors("train")
        if real_y.dim() != 1:
            raise ConfigError(f"{self.method} distills from hard class labels; the training data has labels of "
                              f"shape {tuple(real_y.shape)}.", key="data")
        self.experts = load_or_train_experts(state, ctx, config.expert_config)
        acc = self.experts.test_acc
        ctx.log_metrics({"experts/test_acc_mean": sum(acc) / len(acc), "experts/trained": float(self.experts.trained)})
        self.gens = [torch.Generator().manual_seed(state.seed + DRAW_SEED + i) for i in range(4)]
        net = state.build_model(seed=state.seed)
        self.body = net.body
        self.body.train()
        self.like = {n: p.detach() for n, p in self.body.named_parameters()}
        self.buffers = {n: b.clone() for n, b in self.body.named_buffers()}
        if self.experts.trajectories[0].shape[1] != sum(p.numel() for p in self.like.values()):
            raise ConfigError("the cached expert trajectories do not fit this model's parameters", key="experts")
        self.labels = torch.arange(self.k).repeat_interleave(config.ipc).to(self.device)
        self.images = self._init_images(net, real_x, real_y.long()).to(self.device).requires_grad_()
        self.opt_img = torch.optim.SGD([self.images], lr=config.lr_img, momentum=0.5)
        self.dsa = DSA(config.dsa_strategy) if config.dsa and self.images.dim() == 4 else None
        self.order = torch.randperm(len(self.experts.trajectories), generator=self.gens[1])
        self.progress = {"expert_position": 0}
        self._init_lr()

    # -- set-up ---------------------------------------------------------------
    def _init_images(self, net, real_x, real_y) -> torch.Tensor:
        if self.c.pix_init == "noise":
            shape = tuple(net.to_input(real_x[:1].to(self.device).float()).shape[1:])
            return torch.randn(len(self.labels), *shape, generator=self.gens[0])
        idx = random_real(real_x, real_y, self.c.ipc, self.k, self.gens[0])
        with torch.no_grad():
            return net.to_input(real_x[idx].to(self.device).float()).cpu()

    def _init_lr(self) -> None:
        self.syn_lr = torch.tensor(self.c.lr_teacher, device=self.device).requires_grad_()
        self.opt_lr = torch.optim.SGD([self.syn_lr], lr=self.c.lr_lr, momentum=0.5)

    def checkpoint_objects(self) -> dict:
        return {"images": self.images, "opt_img": self.opt_img, "expert_order": self.order,
                "progress": self.progress, **{f"generator_{i}": g for i, g in enumerate(self.gens)},
                **self.lr_objects()}

    def lr_objects(self) -> dict:
        return {"syn_lr": self.syn_lr, "opt_lr": self.opt_lr}

    # -- draws ----------------------------------------------------------------
    def next_expert(self) -> torch.Tensor:
        """The official cycle: experts in a shuffled order, reshuffled after each pass."""
        position = self.progress["expert_position"]
        if position == len(self.order):
            self.order.copy_(torch.randperm(len(self.order), generator=self.gens[1]))
            position = 0
        self.progress["expert_position"] = position + 1
        return self.experts.trajectories[int(self.order[position])]

    def draw_unroll(self) -> tuple[list[torch.Tensor], list[int]]:
        batches = batch_schedule(len(self.labels), self.c.batch_syn, self.c.syn_steps, self.gens[2])
        batches = [b.to(self.device) for b in batches]
        seeds = [int(s) for s in torch.randint(2**31 - 1, (self.c.syn_steps,), generator=self.gens[3])]
        return batches, seeds

    def _augment(self, seeds: list[int]):
        if self.dsa is None:
            return None
        return lambda x, step: self.dsa(x, seed=seeds[step])

    def match(self, trajectory, start: int, target: int, lr: torch.Tensor, *, update: bool) -> torch.Tensor:
        theta0 = trajectory[start].to(self.device)
        theta_target = trajectory[target].to(self.device)
        batches, seeds = self.draw_unroll()
        images = self.images if update else self.images.detach()
        final = unroll(self.body, self.like, theta0, images, self.labels, lr, batches, self._augment(seeds),
                       create_graph=update, checkpoint=self.c.checkpoint_unroll, buffers=self.buffers)
        return matching_loss(final, theta0, theta_target)

    # -- the loop -------------------------------------------------------------
    def run(self) -> SyntheticData:
        c, ctx = self.c, self.ctx
        saved = self.checkpoint_objects()
        first = ctx.resume(**saved)
        for it in range(first, c.iterations):
            began = time.perf_counter()
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            metrics = self.iteration(it)
            metrics["sec_per_iteration"] = time.perf_counter() - began
            if self.device.type == "cuda":
                metrics["peak_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            if (it + 1) % c.log_every == 0 or it + 1 == c.iterations:
                ctx.print(f"  [dim]{ctx.prefix}[/] iteration {it + 1}/{c.iterations}: "
                          + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k in self.shown))
            ctx.step_end(metrics, checkpoint=saved, synthetic=self.result())
            if self.stopped():
                ctx.print(f"  [dim]{ctx.prefix}[/] stopped after iteration {it + 1}: {self.stop_reason()}")
                break
        result = self.result()
        if c.grid and self.state.tracker is not None:
            log_synthetic_grid(ctx, result, self.state.info)
        return result

    shown = ("grand_loss", "syn_lr", "start_epoch")

    def stopped(self) -> bool:
        return False

    def stop_reason(self) -> str:
        return "iterations"

    def iteration(self, it: int) -> dict[str, float]:
        trajectory = self.next_expert()
        start = int(torch.randint(self.c.max_start_epoch, (1,), generator=self.gens[1]))
        loss = self.match(trajectory, start, start + self.c.expert_epochs, self.syn_lr, update=True)
        self.opt_img.zero_grad(set_to_none=True)
        self.opt_lr.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_img.step()
        self.opt_lr.step()
        return {"grand_loss": loss.item(), "syn_lr": self.syn_lr.item(), "start_epoch": float(start)}

    def learned_lr(self):
        return self.syn_lr.detach().item()

    def result(self) -> SyntheticData:
        extras = {"method": self.method, "ipc": self.c.ipc, "syn_steps": self.c.syn_steps,
                  "experts_key": self.experts.key}
        return SyntheticData(self.images.detach().clone(), self.labels.detach().clone(), lr=self.learned_lr(),
                             extras=extras, label_kind="hard", space="input")


class STMLoop(MTTLoop):
    method = "stm"
    shown = ("grand_loss", "next_stage_loss", "start_epoch_cap", "syn_lr", "lr_img")

    def __init__(self, config, state, ctx):
        self.rule = StageRule(init_epoch=config.init_epoch, max_start_epoch=config.max_start_epoch,
                              sigma=config.sigma, min_duration=config.min_duration, max_duration=config.max_duration,
                              finetune_every=config.finetune_every, decay=config.finetune_decay,
                              floor=config.lr_img_floor)
        super().__init__(config, state, ctx)

    def _init_lr(self) -> None:
        """``log_syn_lr``: one entry (global), or one per start epoch below the cap (independent), with
        their own momentum-0.5 SGD buffers (torch.optim.SGD's rule: a zero buffer's first step is the grad)."""
        c = self.c
        size = c.max_start_epoch if c.lr_mode == "independent" else 1
        self.log_lr = torch.full((size,), math.log(c.lr_teacher), device=self.device, dtype=torch.float32)
        self.lr_buffer = torch.zeros_like(self.log_lr)
        self.lr_state = {"active": c.init_epoch if c.lr_mode == "independent" else 1}

    def lr_objects(self) -> dict:
        return {"log_lr": self.log_lr, "lr_buffer": self.lr_buffer, "lr_state": self.lr_state,
                "stage": self.rule.progress, "test_loss": self.rule.test_loss}

    def _lr_index(self, start: int) -> int:
        return start if self.c.lr_mode == "independent" else 0

    def _lr_lr(self) -> float:
        return self.c.lr_lr * self.rule.cap if self.c.lr_mode == "independent" else self.c.lr_lr

    def iteration(self, it: int) -> dict[str, float]:
        c, rule = self.c, self.rule
        trajectory = self.next_expert()
        cap = rule.cap
        start = it % cap if c.sample_method == "cycle" else int(torch.randint(cap, (1,), generator=self.gens[1]))
        metrics = {"start_epoch": float(start), "start_epoch_cap": float(cap)}
        if rule.collecting:
            test_lr = self.log_lr[self.lr_state["active"] - 1].exp()
            next_loss = self.match(trajectory, cap, cap + 1, test_lr, update=False).item()
            rule.record(next_loss)
            metrics["next_stage_loss"] = next_loss
        index = self._lr_index(start)
        log_lr = self.log_lr[index].detach().clone().requires_grad_()
        loss = self.match(trajectory, start, start + 1, log_lr.exp(), update=True)
        self.opt_img.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_img.step()
        with torch.no_grad():
            grad = log_lr.grad if log_lr.grad is not None else torch.zeros_like(log_lr)
            self.lr_buffer[index] = 0.5 * self.lr_buffer[index] + grad
            self.log_lr[index] -= self._lr_lr() * self.lr_buffer[index]
        lr_img = self.opt_img.param_groups[0]["lr"]
        decision = rule.check(it, lr_img)
        for group in self.opt_img.param_groups:
            group["lr"] = decision["lr_img"]
        if decision["advanced"] and c.lr_mode == "independent":
            active = self.lr_state["active"]
            with torch.no_grad():
                self.log_lr[active] = self.log_lr[active - 1]
                self.lr_buffer[active] = 0.0
            self.lr_state["active"] = active + 1
        metrics.update({"grand_loss": loss.item(), "syn_lr": float(self.log_lr[index].exp()),
                        "lr_img": decision["lr_img"], "fine_tuning": float(rule.progress["fine_tuning"]),
                        "stage_length": float(decision["stage_length"]), "advanced": float(decision["advanced"]),
                        "passed": float(rule.progress["passed"]), "stopped": float(decision["stop"])})
        if decision["checked"]:
            metrics["threshold"] = decision["threshold"]
            if math.isfinite(decision["r"]):
                metrics["pearson_r"] = decision["r"]
        return metrics

    def stopped(self) -> bool:
        return bool(self.rule.progress["stopped"])

    def stop_reason(self) -> str:
        return f"lr_img fell below {self.c.lr_img_floor} while fine-tuning" if self.stopped() else "iterations"

    def learned_lr(self):
        if self.c.lr_mode == "global":
            return float(self.log_lr[0].exp())
        return self.log_lr[:self.lr_state["active"]].detach().exp().cpu().clone()

    def result(self) -> SyntheticData:
        out = super().result()
        out.extras.update(start_epoch_cap=self.rule.cap, stop_reason=self.stop_reason(),
                          lr_mode=self.c.lr_mode)
        return out
