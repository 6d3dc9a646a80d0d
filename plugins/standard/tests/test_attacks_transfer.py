"""The transfer attack: it is APGD/PGD on the trained surrogate, never queries the target, and transfers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepscope import hookimpl
from deepscope.testing import make_host, run_toml, tiny_data
from deepscope_standard.attacks_config import TransferConfig
from deepscope_standard.attacks import pgd
from deepscope_standard.autopgd import apgd
from deepscope_standard.transfer import TransferAttack

SHAPE = (1, 8, 8)
CLASSES = 4


class Counting(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_perturb_is_apgd_on_the_surrogate_and_never_queries_the_target():
    torch.manual_seed(0)
    surrogate = nn.Sequential(nn.Flatten(), nn.Linear(64, CLASSES)).eval()
    attack = TransferAttack(TransferConfig(eps=0.1, steps=5, seed=3))
    attack.surrogate = surrogate  # as setup leaves it
    target = Counting(nn.Sequential(nn.Flatten(), nn.Linear(64, CLASSES)))
    x, y = torch.rand(6, *SHAPE), torch.arange(6) % CLASSES
    got = attack.perturb(target, x, y)
    assert target.calls == 0
    assert torch.equal(got, apgd(surrogate, x, y, eps=0.1, steps=5, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("method", ["pgd", "apgd"])
def test_a_transfer_attack_whose_surrogate_is_the_attacked_model_is_the_white_box_attack(method):
    """The oracle: with the attacked model as its own surrogate, transfer is white-box PGD (APGD) bit for bit,
    batch after batch (one generator runs through the stage) and for targeted attacks too."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, CLASSES)).eval()
    attack = TransferAttack(TransferConfig(method=method, eps=0.1, steps=7, norm="l2", loss="margin", seed=5))
    attack.surrogate = model
    white_box = pgd if method == "pgd" else apgd
    gen = torch.Generator().manual_seed(5)
    for batch in range(2):
        x, y = torch.rand(6, *SHAPE), torch.arange(6) % CLASSES
        target = (y + 1 + batch) % CLASSES if batch else None
        expected = white_box(model, x, y, eps=0.1, norm="l2", steps=7, loss="margin", target=target, generator=gen)
        got = attack.perturb(model, x, y, target=target)
        assert torch.equal(got, expected), f"batch {batch}"
        assert not torch.equal(got, x)  # the attack moved the inputs: the equality is not vacuous


def test_perturb_before_setup_is_a_clear_error():
    with pytest.raises(RuntimeError, match="setup"):
        TransferAttack(TransferConfig()).perturb(nn.Identity(), torch.rand(1, *SHAPE), torch.tensor([0]))


class TinyPlugin:
    @hookimpl
    def deepscope_register_datasets(self, register):
        register("tiny", lambda config: tiny_data(n_train=512, n_test=100, shape=SHAPE, classes=CLASSES, seed=4),
                 None)


def test_transfer_stage_lowers_the_target_accuracy_and_logs_the_surrogate():
    import deepscope_standard

    result = run_toml("""
        [run]
        name = "t"
        seed = 0
        [data]
        use = "tiny"
        [model]
        use = "mlp"
        [[stage]]
        do = "train"
        use = "standard"
        optimizer = "adam"
        lr = 0.01
        epochs = 5
        [[stage]]
        do = "attack"
        use = "transfer"
        surrogate = { use = "mlp", widths = [32] }
        eps = 0.2
        steps = 10
        epochs = 5
        lr = 0.01
        """, make_host(TinyPlugin(), deepscope_standard), track=False)
    m = result.metrics
    assert m["attack/transfer/surrogate_test_acc"] > 0.8  # the surrogate learned the task
    assert m["attack/transfer/robust_acc"] < m["attack/transfer/clean_acc"] - 0.2  # and its examples transfer
    assert m["attack/transfer/max_linf"] <= 0.2 + 1e-6
