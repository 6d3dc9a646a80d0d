"""Probes of a continual run: the accuracy matrix and its summaries, task inference, mask overlap."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepscope import task_key

from .evaluation import accuracy, batches, fetch, require_record, require_supermask


def mask_bits(body) -> int:
    """Bits of one dedicated mask: one per weight of every masked layer."""
    return sum(layer.weight.numel() for layer in body.masked_layers())


def task_bits(body, rec, task: int) -> int:
    """Per-task storage: a dedicated mask (1 bit per weight), or k float32 alphas per layer."""
    if rec["method"].get(str(task)) == "impress":
        return 32 * len(rec["basis"][str(task)]) * len(body.masked_layers())
    return mask_bits(body)


def summaries(matrix: list[list[float]], final: list[float]) -> tuple[list[float | None], float | None, float | None]:
    """Forgetting per task (max earlier accuracy - final), its mean and BWT, over every task but the last learned."""
    forgetting: list[float | None] = []
    bwt = []
    for j in range(len(final)):
        column = [row[j] for row in matrix if len(row) > j]
        if j == len(final) - 1 or not column:
            forgetting.append(None)
            continue
        forgetting.append(max(column) - final[j])
        bwt.append(final[j] - column[0])
    done = [f for f in forgetting if f is not None]
    return forgetting, (sum(done) / len(done) if done else None), (sum(bwt) / len(bwt) if bwt else None)


class ContinualAccuracy:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx):
        body = require_supermask(state)
        rec = require_record(state, "continual-accuracy")
        learned, matrix, model = rec["learned"], rec["matrix"], state.model
        was = model.task
        final = []
        with ctx.eval_mode():
            for j in learned:
                model.set_task(j)
                final.append(accuracy(model, state.data.task(j).test, state.device, self.config.examples))
        model.set_task(was)
        # from the trainer's own evaluations (the matrix), so the test examples match: its last row is R_final
        forgetting, mean_forgetting, bwt = summaries(matrix, matrix[-1])
        bits = [task_bits(body, rec, t) for t in learned]
        out = {task_key(t, "acc"): a for t, a in zip(learned, final)}
        out.update(avg_acc=sum(final) / len(final), forgetting=mean_forgetting, bwt=bwt, tasks=len(learned),
                   dedicated_mask_bits=mask_bits(body), mean_task_bits=sum(bits) / len(bits))
        impress = [b for t, b in zip(learned, bits) if rec["method"].get(str(t)) == "impress"]
        if impress:
            out["impress_bits_ratio"] = (sum(impress) / len(impress)) / mask_bits(body)
        rows = []
        for i, row in enumerate(matrix):
            rows.append({"after": i, "task": learned[i],
                         **{f"task_{learned[j]}": round(a, 6) for j, a in enumerate(row)}})
        ctx.log_table("accuracy_matrix", rows)
        ctx.log_table("tasks", [
            {"task": t, "method": rec["method"].get(str(t), ""), "acc": final[j],
             "forgetting": "" if forgetting[j] is None else forgetting[j], "bits": bits[j],
             "basis": " ".join(str(s) for s in rec["basis"].get(str(t), []))}
            for j, t in enumerate(learned)])
        if self.config.plot and len(learned) > 1:
            ctx.log_figure(heat_map(matrix, learned), "accuracy_matrix")
        return out


def heat_map(matrix, learned):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(learned)
    grid = np.full((n, n), np.nan)
    for i, row in enumerate(matrix):
        grid[i, :len(row)] = row
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(n), [str(t) for t in learned])
    ax.set_yticks(range(n), [str(t) for t in learned])
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after learning task")
    if n <= 12:
        for i in range(n):
            for j in range(i + 1):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if grid[i, j] < 0.6 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title("accuracy matrix R[i, j]")
    return fig


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the softmax outputs over the batch."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(1).mean()


def infer_oneshot(model, body, x: torch.Tensor, learned: list[int]) -> int:
    """SupSup: superpose the learned tasks' masks with alpha = 1/T, step down the entropy gradient once.

    The task is the one whose coefficient has the most negative dH/d alpha; ties go to the task learned
    first (torch.argmin's first index), so identical masks always give the first one.
    """
    coef = torch.zeros(body.num_tasks, device=x.device)
    coef[learned] = 1.0 / len(learned)
    coef.requires_grad_(True)
    body.superpose(coef)
    try:
        with torch.enable_grad():
            grad, = torch.autograd.grad(entropy(model(x)), coef)
    finally:
        body.superpose(None)
    return learned[int(torch.argmin(grad[learned]))]


@torch.no_grad()
def infer_min_entropy(model, body, x: torch.Tensor, learned: list[int]) -> int:
    """One forward per learned task; the task whose mask gives the least entropy (ties: the first learned)."""
    values = []
    for t in learned:
        model.set_task(t)
        values.append(float(entropy(model(x))))
    return learned[min(range(len(values)), key=values.__getitem__)]


class TaskInference:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx):
        cfg = self.config
        body = require_supermask(state)
        rec = require_record(state, "task-inference")
        learned, model, device = rec["learned"], state.model, state.device
        infer = infer_oneshot if cfg.method == "oneshot-entropy" else infer_min_entropy
        was = model.task
        generator = torch.Generator().manual_seed(cfg.seed)
        out, rows = {}, []
        right_total = trials_total = gn_right = gn_total = 0
        with ctx.eval_mode():
            for j in learned:
                test = state.data.task(j).test
                right = 0
                for _ in range(cfg.trials):
                    index = torch.randint(0, len(test), (cfg.examples,), generator=generator)
                    x, _ = fetch(test, index)
                    right += int(infer(model, body, x.to(device), learned) == j)
                correct = total = 0
                for x, y in batches(test, cfg.batch, n=cfg.eval_examples):
                    x, y = x.to(device), y.to(device)
                    model.set_task(infer(model, body, x[:cfg.examples], learned))
                    with torch.no_grad():
                        correct += int((model(x).argmax(1) == y).sum())
                    total += int(y.numel())
                out[task_key(j, "inference_acc")] = right / cfg.trials
                out[task_key(j, "gn_acc")] = correct / max(total, 1)
                rows.append({"task": j, "inference_acc": right / cfg.trials, "gn_acc": correct / max(total, 1)})
                right_total, trials_total = right_total + right, trials_total + cfg.trials
                gn_right, gn_total = gn_right + correct, gn_total + total
        model.set_task(was)
        out["inference_acc"] = right_total / trials_total
        out["gn_acc"] = gn_right / max(gn_total, 1)
        ctx.log_table("inference", rows)
        return out


def slot_sources(body, rec) -> dict[int, int | None]:
    """Every learned mask slot and the task it was learned on (None for random masks)."""
    sources: dict[int, int | None] = {t: t for t in rec["learned"] if rec["method"].get(str(t)) == "supsup"}
    for s, label in rec["slots"].items():
        sources[int(s)] = int(label.split()[1]) if label.startswith("task ") else None
    return sources


class MaskOverlap:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx):
        body = require_supermask(state)
        rec = require_record(state, "mask-overlap")
        model, learned = state.model, rec["learned"]
        sources = slot_sources(body, rec)
        slots = sorted(sources)
        masks = {s: body.slot_mask(s) for s in slots}
        pairs, jaccards = [], []
        for a_i, a in enumerate(slots):
            for b in slots[a_i + 1:]:
                inter = int((masks[a] & masks[b]).sum())
                union = int((masks[a] | masks[b]).sum())
                jaccards.append(inter / union if union else 1.0)
                pairs.append({"slot_a": a, "slot_b": b, "jaccard": jaccards[-1]})
        density = float(masks[slots[0]].float().mean()) if slots else 0.0
        foreign, own, rows = [], [], []
        was = model.task
        with ctx.eval_mode():
            for s in slots:
                body.force_slot(s)
                try:
                    for j in learned:
                        model.set_task(j)
                        acc = accuracy(model, state.data.task(j).test, state.device, self.config.examples)
                        (own if sources[s] == j else foreign).append(acc)
                        rows.append({"slot": s, "source": "" if sources[s] is None else sources[s], "task": j,
                                     "acc": acc})
                finally:
                    body.force_slot(None)
        model.set_task(was)
        ctx.log_table("overlap", pairs)
        ctx.log_table("cross_task_accuracy", rows)
        out = {"masks": len(slots), "density": density, "chance": 1.0 / state.data.task(learned[0]).info.num_classes,
               "random_jaccard": density / (2 - density) if density < 2 else None}
        if jaccards:
            out["mean_jaccard"] = sum(jaccards) / len(jaccards)
        if foreign:
            out["foreign_acc"] = sum(foreign) / len(foreign)
        if own:
            out["own_acc"] = sum(own) / len(own)
        return out
