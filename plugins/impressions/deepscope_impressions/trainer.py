"""The `continual` trainer: SupSup (one mask per task) or ImpressLearn (alphas over a frozen basis of masks).

Tasks are learned in order; after each one every task learned so far is evaluated (a row
of the accuracy matrix, Avalanche's vocabulary) and, with ``[run] checkpoint_every_steps``,
the run is checkpointed, so a run killed between tasks resumes at the next task.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepscope import ConfigError, task_key

from .evaluation import accuracy, batches, record, require_supermask


def make_optimizer(config, params, lr: float):
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)


def alpha_penalty(body, task: int) -> torch.Tensor:
    """sum over layers of (||alpha_t||_1 - 1)^2: keeps the combination's scale near one mask's (the fork's)."""
    total = 0.0
    for layer in body.masked_layers():
        total = total + (layer.alphas[task].abs().sum() - 1.0) ** 2
    return total


class Continual:
    def __init__(self, config):
        self.config = config

    # -- the loop ------------------------------------------------------------
    def train(self, state, ctx):
        cfg = self.config
        body = require_supermask(state)
        data = state.data
        if not data.tasks:
            raise ConfigError(f"dataset {state.info.name!r} is not a task sequence; use permuted-tasks, "
                              "rotated-tasks or split-tasks", key="use")
        tasks = list(cfg.tasks) if cfg.tasks is not None else list(range(len(data.tasks)))
        bad = [t for t in tasks if t >= min(len(data.tasks), body.num_tasks)]
        if bad:
            raise ConfigError(f"tasks {bad} out of range: the data and model have {len(data.tasks)} tasks "
                              f"(0..{len(data.tasks) - 1})", key="tasks")
        done = ctx.resume(tasks_done=0)
        rec = record(state)
        again = [t for t in tasks[done:] if t in rec["learned"]]
        if again:
            raise ConfigError(f"tasks {again} were already learned by an earlier stage; a task's mask is learned "
                              "once", key="tasks")
        slots = self.prepare_basis(state, ctx, body, rec) if cfg.method == "impress" else None
        for i in range(done, len(tasks)):
            t = tasks[i]
            self.learn(state, ctx, body, t, slots)
            rec["learned"].append(t)
            rec["method"][str(t)] = cfg.method
            if slots is not None:
                rec["basis"][str(t)] = list(slots)
            row = self.evaluate(state, ctx, rec["learned"])
            rec["matrix"].append(row)
            metrics = {task_key(j, "acc"): a for j, a in zip(rec["learned"], row)}
            metrics["avg_acc"] = sum(row) / len(row)
            ctx.log_metrics(metrics, step=len(rec["learned"]))
            ctx.print(f"  [dim]{ctx.prefix}[/] after task {t}: average accuracy {metrics['avg_acc']:.4f}")
            ctx.step_end(checkpoint={"tasks_done": i + 1})
        return None

    def learn(self, state, ctx, body, task: int, slots: list[int] | None) -> None:
        cfg = self.config
        if slots is None:
            body.use_mask(task)
            params, lr = body.slot_params(task), cfg.lr
        else:
            body.use_basis(task, slots)
            params, lr = body.alpha_params(task), cfg.lr
        self.fit(state, ctx, body, task, params, lr, penalty=slots is not None)

    def fit(self, state, ctx, body, task: int, params, lr: float, penalty: bool) -> None:
        """Train only ``params`` on ``task``'s training set (everything else frozen)."""
        cfg = self.config
        model, device = state.model, state.device
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        opt = make_optimizer(cfg, params, lr)
        data = state.data.task(task)
        batch_size = cfg.batch_size or data.batch_size
        generator = torch.Generator().manual_seed(state.seed * 1000 + task)
        model.set_task(task)
        model.train()
        try:
            for _ in range(cfg.epochs_per_task):
                total, seen = 0.0, 0
                for x, y in batches(data.train, batch_size, generator):
                    x, y = x.to(device), y.to(device)
                    loss = F.cross_entropy(model(x), y)
                    if penalty and cfg.alpha_l1 > 0:
                        loss = loss + cfg.alpha_l1 * alpha_penalty(body, task)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    state.step += 1
                    total += float(loss.detach()) * len(y)
                    seen += len(y)
                ctx.epoch_end({"loss": total / max(seen, 1), "task": task})
        finally:
            for p in params:
                p.requires_grad_(False)
                p.grad = None
            model.eval()

    def evaluate(self, state, ctx, learned: list[int]) -> list[float]:
        model, row = state.model, []
        with ctx.eval_mode():
            for j in learned:
                model.set_task(j)
                row.append(accuracy(model, state.data.task(j).test, state.device, self.config.eval_examples))
        return row

    # -- bases -----------------------------------------------------------------
    def prepare_basis(self, state, ctx, body, rec) -> list[int]:
        """The mask slots the new tasks combine: learned SupSup masks, repeated masks of one task, or random."""
        cfg, k = self.config, self.config.num_masks
        if cfg.basis == "heterogeneous":
            pool = list(cfg.basis_tasks) if cfg.basis_tasks is not None else [
                t for t in rec["learned"] if rec["method"].get(str(t)) == "supsup"][:k]
            missing = [t for t in pool if rec["method"].get(str(t)) != "supsup"]
            if missing or len(pool) != k:
                raise ConfigError(f"a heterogeneous basis of num_masks = {k} needs {k} tasks learned with method "
                                  f"\"supsup\" in an earlier stage; learned so far: {rec['learned']} "
                                  f"(basis_tasks {pool}). Learn more tasks first or lower num_masks", key="num_masks")
            return pool
        extra = list(range(body.num_tasks, body.num_slots))
        if len(extra) < k:
            raise ConfigError(f"a {cfg.basis} basis of num_masks = {k} needs {k} spare mask slots, the model has "
                              f"{len(extra)}; set [model] extra_masks = {k}", key="num_masks")
        slots = extra[:k]
        if cfg.basis == "random":
            generator = torch.Generator().manual_seed(state.seed * 7919 + 17)
            for s in slots:
                if rec["slots"].get(str(s)) != "random":
                    with torch.no_grad():
                        for p in body.slot_params(s):
                            p.copy_(torch.randn(p.shape, generator=generator).to(p))
                    rec["slots"][str(s)] = "random"
            return slots
        source = cfg.basis_task
        if source >= body.num_tasks:
            raise ConfigError(f"basis_task {source} out of range (the model has {body.num_tasks} tasks)",
                              key="basis_task")
        for r, s in enumerate(slots):
            label = f"task {source} repeat {r}"
            if rec["slots"].get(str(s)) != label:
                self.learn_slot(state, ctx, body, source, s)
                rec["slots"][str(s)] = label
        return slots

    def learn_slot(self, state, ctx, body, task: int, slot: int) -> None:
        """Learn the mask of a spare slot on ``task``, leaving that task's own mask, alphas and norms as they were."""
        keep = {k: v.clone() for k, v in body.state_dict().items() if not k.endswith(f"scores.{slot}")}
        body.use_basis(task, [slot], torch.tensor(1.0))
        self.fit(state, ctx, body, task, body.slot_params(slot), self.config.mask_lr or self.config.lr,
                 penalty=False)
        body.load_state_dict(keep, strict=False)
