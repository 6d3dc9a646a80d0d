"""Expert trajectories (MTT's ``buffer.py``), trained once per (data, model, expert config) into the cache.

Expert ``i`` is a fresh network initialized from ``experts.seed + i``, trained with plain SGD on the
real training set (in the model's input space, DSA on every batch when asked), its flat parameters
saved at the start and after every epoch: a [epochs + 1, P] tensor. The entry lives in the core's
content-addressed cache (``deepscope.cache``, namespace ``mtt-experts``), never in MLflow; its key
holds everything that changes the trajectories, so concurrent sweep workers build it once (the
cache's flock) and every later distillation reuses it.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F

from deepscope import save_tensors
from deepscope_standard import DSA, evaluate, flatten_params

EXPERTS_VERSION = 1
NAMESPACE = "mtt-experts"
ORDER_SEED = 7_000  # expert i's batch order and DSA draws come from experts.seed + 7000 + i


@attrs.define
class Experts:
    """The loaded trajectories: ``trajectories[i][e]`` is expert i's flat parameters after epoch e."""

    trajectories: list[torch.Tensor]
    test_acc: list[float]
    key: str
    trained: int  # how many experts this call trained (0: all came from the cache)

    @property
    def epochs(self) -> int:
        return int(self.trajectories[0].shape[0]) - 1


def expert_cache_config(state, experts) -> dict:
    return {"version": EXPERTS_VERSION, "data": state.pipeline.data.resolved(),
            "model": state.pipeline.model.resolved(), "experts": attrs.asdict(experts)}


def load_or_train_experts(state, ctx, experts) -> Experts:
    entry = state.cache.entry(NAMESPACE, expert_cache_config(state, experts))
    trained = {"count": 0}

    def build(directory):
        accs = []
        for i in range(experts.num):
            trajectory, acc = train_expert(state, experts, i)
            save_tensors(directory, f"expert-{i}", trajectory)
            accs.append(acc)
            trained["count"] += 1
            ctx.print(f"  [dim]{ctx.prefix}[/] expert {i + 1}/{experts.num}: test_acc {acc:.4f}")
        save_tensors(directory, "summary", {"test_acc": torch.tensor(accs, dtype=torch.float64)})

    if not entry.exists():
        ctx.print(f"  [dim]{ctx.prefix}[/] training {experts.num} experts into the cache ({entry.path})")
    entry.get_or_build(build)
    trajectories = [entry.load(f"expert-{i}") for i in range(experts.num)]
    accs = entry.load("summary")["test_acc"].tolist()
    return Experts(trajectories, accs, entry.key, trained["count"])


def train_expert(state, experts, index: int) -> tuple[torch.Tensor, float]:
    """One expert's trajectory [epochs + 1, P] (float32, CPU) and its final real test accuracy."""
    device = state.device
    net = state.build_model(seed=experts.seed + index)
    x, y = state.data.tensors("train")
    y = y.long()
    generator = torch.Generator().manual_seed(experts.seed + ORDER_SEED + index)
    dsa = DSA() if experts.dsa else None
    optimizer = torch.optim.SGD(net.parameters(), lr=experts.lr, momentum=experts.momentum,
                                weight_decay=experts.weight_decay)
    snapshots = [_flat(net)]
    for _ in range(experts.epochs):
        net.train()
        for idx in torch.randperm(len(x), generator=generator).split(experts.batch):
            with torch.no_grad():
                z = net.to_input(x[idx].to(device).float())
            if dsa is not None and z.dim() == 4:
                z = dsa(z, seed=int(torch.randint(2**31 - 1, (1,), generator=generator)))
            loss = F.cross_entropy(net.body(z), y[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        snapshots.append(_flat(net))
    acc = evaluate(net, state.data.test_loader(), device)["acc"]
    return torch.stack(snapshots), float(acc)


def _flat(net) -> torch.Tensor:
    return flatten_params(dict(net.body.named_parameters())).detach().float().cpu().clone()
