"""The ``transfer`` attack: adversarial examples crafted on a surrogate, never on the attacked model.

``setup`` trains the surrogate (any registered model, behind the data's normalization)
on the run's training set with its own seed, once, before the first batch; ``perturb``
then runs APGD or PGD on the surrogate. The attacked model is never queried, so its
gradients, masked or not, play no part: a defence that stops white-box attacks but not
transferred ones was hiding its gradients (Athalye et al. 2018 list transfer as a check).
"""

from __future__ import annotations

import torch

from .attacks import pgd
from .autopgd import apgd


class TransferAttack:
    def __init__(self, config):
        self.config = config
        self.surrogate = None
        self._generator = None

    def setup(self, state, ctx) -> None:
        from deepscope import build_network, structure_component

        from .trainers import evaluate, train_model
        from .trainers_config import TrainConfig

        c = self.config
        spec = c.surrogate
        if isinstance(spec, dict):
            spec, issues = structure_component(state.host.registry, "model", dict(spec), "surrogate")
            if issues:
                from deepscope import ConfigError

                raise ConfigError(issues)
        with torch.random.fork_rng(devices=[]):  # the run's global RNG is left as it was
            torch.manual_seed(c.seed)
            surrogate = build_network(spec, state.info).to(state.device)
            x, y = state.data.tensors("train", c.n_train)
            train = TrainConfig(optimizer="adam", lr=c.lr, weight_decay=0.0, epochs=c.epochs,
                                batch_size=c.train_batch_size)
            train_model(surrogate, (x, y), train, state.device)
        surrogate.eval()
        xt, yt = state.data.tensors("test", c.n_examples)
        acc = evaluate(surrogate, zip(xt.split(512), yt.split(512)), state.device)["acc"]
        ctx.log_metrics({"surrogate_test_acc": acc})
        self.surrogate = surrogate

    def perturb(self, model, x, y, target=None):
        if self.surrogate is None:
            raise RuntimeError("transfer: setup(state, ctx) trains the surrogate before the first batch")
        c = self.config
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(c.seed)
        common = dict(eps=c.eps, norm=c.norm, steps=c.steps, eot=c.eot, target=target, generator=self._generator)
        if c.method == "apgd":
            return apgd(self.surrogate, x, y, loss=c.loss, **common)
        return pgd(self.surrogate, x, y, loss=c.loss, **common)
