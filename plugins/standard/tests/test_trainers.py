"""Trainers: the loop learns, masks stay applied, schedules follow their closed forms, BN modes are right."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepscope_standard import attacks_config, probes_config, trainers_config
from deepscope_standard.trainers import evaluate, lr_factor, make_scheduler, train_model
from deepscope import ConfigError, hookimpl
from deepscope.testing import make_host, run_toml, tiny_data

SHAPE = (1, 4, 4)


class ModeRecorder(nn.Module):
    """An MLP with BatchNorm that records ``self.training`` at every forward."""

    def __init__(self, classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(),
                                 nn.Linear(32, classes))
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.net(x)


class HalfPruner:
    """Masks the first half of every prunable weight (a fixed, known mask)."""

    def __init__(self, config):
        pass

    def prune(self, state, ctx, density):
        masks = {}
        for name, p in state.prunable().items():
            m = torch.ones_like(p, dtype=torch.bool).flatten()
            m[: m.numel() // 2] = False
            masks[name] = m.view_as(p)
        return masks


class Plugin:
    """Tiny data and models plus the standard trainers, attacks and probes; records every metric logged."""

    def __init__(self, n_train=64, classes=3, model="mlp"):
        self.n_train, self.classes, self.model = n_train, classes, model
        self.logged: list[tuple[int, dict]] = []

    @hookimpl
    def deepscope_register_datasets(self, register):
        register("tiny", lambda config: tiny_data(n_train=self.n_train, n_test=40, shape=SHAPE,
                                                  classes=self.classes), None)

    @hookimpl
    def deepscope_register_models(self, register):
        def build(config, info):
            if self.model == "recorder":
                return ModeRecorder(info.num_classes)
            return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, info.num_classes))

        register("tiny-mlp", build, None)

    @hookimpl
    def deepscope_register_pruners(self, register):
        from deepscope import PrunerConfig

        register("half", HalfPruner, PrunerConfig)

    @hookimpl
    def deepscope_register_trainers(self, register):
        trainers_config.register(register)

    @hookimpl
    def deepscope_register_attacks(self, register):
        attacks_config.register(register)

    @hookimpl
    def deepscope_register_probes(self, register):
        probes_config.register(register)

    @hookimpl
    def deepscope_metrics_logged(self, run, metrics, step):
        self.logged.append((step, dict(metrics)))

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(step, m[key]) for step, m in self.logged if key in m]


def run(plugin: Plugin, stages: str, seed: int = 0):
    return run_toml(f"""
        [run]
        name = "t"
        seed = {seed}
        [data]
        use = "tiny"
        [model]
        use = "tiny-mlp"
        {stages}
        """, make_host(plugin), track=False)


def test_standard_trainer_learns_and_logs_every_epoch():
    plugin = Plugin(n_train=96)
    result = run(plugin, """
        [[stage]]
        do = "train"
        use = "standard"
        epochs = 6
        lr = 0.1
        """)
    losses = plugin.series("train/standard/loss")
    assert [s for s, _ in losses] == [1, 2, 3, 4, 5, 6]
    assert losses[-1][1] < 0.5 * losses[0][1]
    assert plugin.series("train/standard/train_acc")[-1][1] > 0.9
    test_acc = plugin.series("train/standard/test_acc")[-1][1]
    state = result.state
    assert test_acc == pytest.approx(evaluate(state.model, state.data.test_loader(), "cpu")["acc"])
    assert test_acc > 0.8
    assert state.epoch == 6 and state.step == 6 * math.ceil(96 / 16)
    assert state.model.training  # the trainer leaves the model in train mode, as it found it


def test_iterations_override_epochs():
    plugin = Plugin(n_train=64)  # 4 batches per epoch
    result = run(plugin, """
        [[stage]]
        do = "train"
        use = "standard"
        iterations = 10
        """)
    assert result.state.step == 10
    assert [s for s, _ in plugin.series("train/standard/loss")] == [1, 2, 3]  # 4 + 4 + 2 steps


def test_masks_stay_applied_during_training():
    result = run(Plugin(), """
        [[stage]]
        do = "prune"
        use = "half"
        sparsity = 0.5
        [[stage]]
        do = "train"
        use = "standard"
        epochs = 2
        optimizer = "adam"
        lr = 0.01
        weight_decay = 0.0
        """)
    state = result.state
    assert state.masks
    for name, p in state.prunable().items():
        mask = state.masks[name]
        assert (p[~mask] == 0).all()
        assert (p[mask] != 0).all()  # the survivors did train (and are not all zeroed)


@pytest.mark.parametrize("epoch,factor", [(0, 1.0), (2.9, 1.0), (3, 0.1), (5.5, 0.1), (6, 0.01), (9, 0.01)])
def test_step_schedule_closed_form(epoch, factor):
    config = trainers_config.StandardConfig(schedule="step", milestones=[3, 6], gamma=0.1, epochs=10)
    assert lr_factor(config, epoch, 10) == pytest.approx(factor)


@pytest.mark.parametrize("epoch", [0, 1, 2.5, 5, 7, 10])
def test_cosine_schedule_closed_form(epoch):
    config = trainers_config.StandardConfig(schedule="cosine", epochs=10)
    assert lr_factor(config, epoch, 10) == pytest.approx((1 + math.cos(math.pi * epoch / 10)) / 2)


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_scheduler_gives_the_closed_form_lr_at_every_epoch_start(schedule):
    extra = {"milestones": (2, 3), "gamma": 0.5} if schedule == "step" else {}
    config = trainers_config.StandardConfig(schedule=schedule, epochs=4, lr=0.2, **extra)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=config.lr)
    sched = make_scheduler(opt, config, steps_per_epoch=5)
    for epoch in range(4):
        expected = 0.2 * (0.5 ** sum(epoch >= m for m in (2, 3)) if schedule == "step"
                          else (1 + math.cos(math.pi * epoch / 4)) / 2)
        assert opt.param_groups[0]["lr"] == pytest.approx(expected)
        for _ in range(5):
            opt.step()
            sched.step()


def test_train_model_on_tensors_with_soft_labels_and_lr_override():
    data = tiny_data(n_train=96, n_test=64, shape=SHAPE, classes=3, seed=2)
    x, y = data.tensors("train")
    soft = 0.8 * F.one_hot(y, 3).float() + 0.2 / 3
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    config = trainers_config.StandardConfig(epochs=30, batch_size=32, lr=1e-6)
    history = train_model(model, (x, soft), config, lr=0.5, test=data.test_loader())
    assert len(history) == 30
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["test_acc"] > 0.8  # lr=1e-6 would not have learned: the override took effect


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_adversarial_trainer_attacks_in_the_chosen_mode(bn_mode):
    plugin = Plugin(n_train=32, model="recorder")  # 2 batches of 16
    result = run(plugin, f"""
        [[stage]]
        do = "train"
        use = "adversarial"
        epochs = 1
        bn_mode = "{bn_mode}"
        attack = {{ use = "pgd", eps = 0.05, steps = 3 }}
        """)
    recorder = result.state.model.body
    attack = bn_mode == "train"
    # per batch: 3 attack steps in bn_mode, a clean no-grad forward in eval mode, the training forward;
    # then the test-set evaluation in eval mode (40 examples in batches of 32)
    per_batch = [attack] * 3 + [False, True]
    assert recorder.modes == per_batch * 2 + [False, False]
    assert "train/adversarial/robust_train_acc" in result.metrics


def test_adversarial_trainer_builds_its_default_attack():
    plugin = Plugin(n_train=32)
    result = run(plugin, """
        [[stage]]
        do = "train"
        use = "adversarial"
        epochs = 1
        mix = 0.5
        """)
    m = result.metrics
    assert 0 <= m["train/adversarial/robust_train_acc"] <= 1 and "train/adversarial/train_acc" in m


def test_adversarial_training_is_more_robust_than_standard_training():
    eps = 0.15
    attack = f'{{ use = "pgd", eps = {eps}, steps = 5 }}'
    robust = {}
    for trainer, extra in (("standard", ""), ("adversarial", f"attack = {attack}")):
        result = run(Plugin(n_train=192, classes=2), f"""
            [[stage]]
            do = "train"
            use = "{trainer}"
            epochs = 8
            lr = 0.1
            {extra}
            [[stage]]
            do = "attack"
            use = "pgd"
            eps = {eps}
            steps = 10
            """)
        robust[trainer] = result.metrics["attack/pgd/robust_acc"]
    assert robust["adversarial"] > robust["standard"] + 0.1, robust


def test_periodic_probes_run_on_the_epoch_counter():
    plugin = Plugin()
    result = run(plugin, """
        [[stage]]
        do = "train"
        use = "standard"
        epochs = 4
        probes = [{ use = "weights", every = 2 }, { use = "accuracy", every = 1 }]
        """)
    assert [s for s, _ in plugin.series("probe/weights/count/total")] == [2, 4]
    assert [s for s, _ in plugin.series("probe/accuracy/acc")] == [1, 2, 3, 4]
    assert plugin.series("probe/accuracy/acc")[-1][1] == pytest.approx(plugin.series("train/standard/test_acc")[-1][1])
    assert result.state.epoch == 4


def test_config_cross_field_errors_name_the_field():
    with pytest.raises(ValueError, match="'nesterov'"):
        trainers_config.StandardConfig(optimizer="adam", nesterov=True)
    with pytest.raises(ValueError, match="'milestones'"):
        trainers_config.StandardConfig(schedule="step", milestones=[5, 2])
    with pytest.raises(ConfigError, match=r"stage\[0\]\.attack\.eps"):
        run(Plugin(), """
            [[stage]]
            do = "train"
            use = "adversarial"
            attack = { use = "pgd", eps = -1.0 }
            """)



class Crash(Exception):
    pass


class CrashingPlugin(Plugin):
    """Fails the run when epoch ``crash_at`` logs its metrics (epoch crash_at - 1 is checkpointed by then)."""

    def __init__(self, crash_at: int | None):
        super().__init__()
        self.crash_at = crash_at
        self.run_id = None

    @hookimpl
    def deepscope_metrics_logged(self, run, metrics, step):
        self.run_id = run.tracker.run_id
        self.logged.append((step, dict(metrics)))
        if step == self.crash_at and any(k.startswith("train/") for k in metrics):
            raise Crash(f"killed at epoch {step}")


@pytest.mark.slow  # three tracked runs (MLflow sqlite)
@pytest.mark.parametrize("trainer", ["adversarial"])  # the standard trainer shares the loop
def test_a_crashed_run_resumes_to_the_same_weights(tmp_path, trainer):
    from deepscope.config import parse_pipeline
    from deepscope.errors import RunFailed
    from deepscope.runner import run_pipeline
    from deepscope.testing import fresh_store

    attack = 'attack = { use = "pgd", eps = 0.05, steps = 2 }' if trainer == "adversarial" else ""
    text = f"""
        [run]
        name = "r"
        seed = 1
        checkpoint_every = 1
        [data]
        use = "tiny"
        [model]
        use = "tiny-mlp"
        [[stage]]
        do = "train"
        use = "{trainer}"
        epochs = 4
        schedule = "cosine"
        {attack}
        """
    text = "\n".join(line.strip() for line in text.splitlines())
    uri = fresh_store(tmp_path / "store")

    def go(plugin, **kwargs):
        host = make_host(plugin)
        return run_pipeline(parse_pipeline(text, host.registry), host, tracking_uri=uri, **kwargs)

    straight = go(CrashingPlugin(None)).state
    crashing = CrashingPlugin(3)
    with pytest.raises(RunFailed, match="killed at epoch 3"):
        go(crashing)
    resuming = CrashingPlugin(None)
    resumed = go(resuming, resume_run_id=crashing.run_id).state
    assert [s for s, _ in resuming.series(f"train/{trainer}/loss")] == [3, 4]  # epochs 1-2 came from the checkpoint
    assert (resumed.epoch, resumed.step) == (straight.epoch, straight.step) == (4, 16)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
