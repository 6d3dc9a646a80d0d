"""Trainers: the loop learns, masks stay applied, schedules follow their closed forms, BN modes are right."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepscope_standard import attacks_config, probes_config, trainers_config
from deepscope_standard.trainers import (evaluate, lr_factor, make_scheduler, supervised_batch_loss, supervised_loss,
                                         train_model)
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


class InputRecorder(nn.Module):
    """A linear model that keeps a copy of every input it sees in train mode (the batches, in order)."""

    def __init__(self, classes: int):
        super().__init__()
        self.linear = nn.Linear(16, classes)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        return self.linear(x.flatten(1))


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
            if self.model == "inputs":
                return InputRecorder(info.num_classes)
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


@pytest.mark.parametrize("schedule, tested", [("epochs = 7", [3, 6, 7]),
                                                ("iterations = 40", [3, 6, 7])])  # 40 steps of 6 a pass: 7 epochs
def test_test_every_tests_every_nth_epoch_and_the_last(schedule, tested):
    plugin = Plugin(n_train=96)
    result = run(plugin, f"""
        [[stage]]
        do = "train"
        use = "standard"
        {schedule}
        test_every = 3
        """)
    assert [s for s, _ in plugin.series("train/standard/test_acc")] == tested
    assert [s for s, _ in plugin.series("train/standard/loss")] == [1, 2, 3, 4, 5, 6, 7]
    assert plugin.series("train/standard/test_acc")[-1][1] == pytest.approx(
        evaluate(result.state.model, result.state.data.test_loader(), "cpu")["acc"])


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


@pytest.mark.parametrize("keep", [0, 20])
def test_adversarial_trainer_keeps_the_last_epochs_first_perturbations(keep):
    from deepscope_standard import recorded_perturbations
    from deepscope_standard.recorded import TRAIN_PERTURBATIONS_KEY

    result = run(Plugin(n_train=32), f"""
        [[stage]]
        do = "train"
        use = "adversarial"
        epochs = 2
        attack = {{ use = "pgd", eps = 0.05, steps = 3 }}
        keep_perturbations = {keep}
        """)
    kept = recorded_perturbations(result.state)
    if keep == 0:
        assert kept is None
        return
    x_kept, x_adv, y_kept = kept
    assert result.state.extras[TRAIN_PERTURBATIONS_KEY]["epoch"] == 1  # the second (last) epoch's record
    assert len(x_kept) == len(x_adv) == len(y_kept) == 20  # 16 of the first batch, 4 of the second
    delta = (x_adv - x_kept).abs().flatten(1).amax(1)
    assert float(delta.max()) <= 0.05 + 1e-6 and float(delta.max()) > 0
    x, y = result.state.data.tensors("train")
    rows = [int(torch.nonzero((x == row).flatten(1).all(1))[0]) for row in x_kept]
    assert torch.equal(y[rows], y_kept) and len(set(rows)) == 20


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



# --------------------------------------------------------------------------- loss = "mse", shuffle


def test_mse_loss_is_the_hand_computed_closed_form():
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    # hard labels [1, 2] -> one-hot rows; per row: (1-0)^2 + (2-1)^2 + 0^2 = 2 and 0.5^2 + 1^2 + (3-1)^2 = 5.25
    assert float(supervised_loss(logits, torch.tensor([1, 2]), "mse")) == pytest.approx((2 + 5.25) / 2)
    # the same labels stored as floats (distilled sets keep their dtype) are still class indices
    assert float(supervised_loss(logits, torch.tensor([1.0, 2.0]), "mse")) == pytest.approx((2 + 5.25) / 2)
    # [N, C] float targets are used as they are: (1-.2)^2 + (2-.8)^2 + 0 = 2.08; (.5+1)^2 + (-1-0)^2 + (3-2)^2 = 4.25
    soft = torch.tensor([[0.2, 0.8, 0.0], [-1.0, 0.0, 2.0]], dtype=torch.float64)
    assert float(supervised_loss(logits, soft, "mse")) == pytest.approx((2.08 + 4.25) / 2)
    with pytest.raises(ValueError, match="2 columns but the model has 3 outputs"):
        supervised_loss(logits, soft[:, :2], "mse")


def test_mse_batch_loss_of_a_fixed_linear_model():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))  # logits = (x0, 2 x1)
    x = torch.tensor([[1.0, 1.0], [3.0, 0.0], [0.0, -1.0]])
    y = torch.tensor([1, 0, 1])
    # logits (1, 2), (3, 0), (0, -2); targets (0, 1), (1, 0), (0, 1): errors 1 + 1, 4 + 0, 0 + 9
    loss, sums = supervised_batch_loss("mse")(model, x, y)
    assert float(loss.detach()) == pytest.approx(15 / 3)
    assert float(sums["loss"]) == pytest.approx(15) and int(sums["correct"]) == 2  # argmax 1, 0, 0


def test_ce_path_matches_torch_for_hard_and_soft_labels():
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    hard = torch.tensor([1, 2])
    soft = torch.tensor([[0.1, 0.9, 0.0], [0.3, 0.3, 0.4]], dtype=torch.float64)
    assert torch.equal(supervised_loss(logits, hard, "ce", 0.1), F.cross_entropy(logits, hard, label_smoothing=0.1))
    assert torch.allclose(supervised_loss(logits, soft), F.cross_entropy(logits, soft.float()))


def test_standard_trainer_learns_a_separable_problem_with_mse():
    plugin = Plugin(n_train=96)
    result = run(plugin, """
        [[stage]]
        do = "train"
        use = "standard"
        loss = "mse"
        epochs = 8
        lr = 0.05
        """)
    losses = plugin.series("train/standard/loss")
    assert losses[-1][1] < 0.5 * losses[0][1]
    assert plugin.series("train/standard/train_acc")[-1][1] > 0.9
    assert plugin.series("train/standard/test_acc")[-1][1] > 0.8
    assert result.state.step == 8 * math.ceil(96 / 16)


def test_train_model_with_mse_on_float_hard_labels():
    data = tiny_data(n_train=96, n_test=64, shape=SHAPE, classes=3, seed=2)
    x, y = data.tensors("train")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    config = trainers_config.StandardConfig(loss="mse", epochs=30, batch_size=32, lr=0.1)
    history = train_model(model, (x, y.float()), config, test=data.test_loader())
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["train_acc"] > 0.8 and history[-1]["test_acc"] > 0.8


def test_label_smoothing_with_mse_is_a_config_error_at_its_key():
    with pytest.raises(ValueError, match="'label_smoothing' must be 0 with loss = 'mse'"):
        trainers_config.StandardConfig(loss="mse", label_smoothing=0.1)
    trainers_config.StandardConfig(loss="ce", label_smoothing=0.1)
    with pytest.raises(ConfigError) as err:
        run(Plugin(), """
            [[stage]]
            do = "train"
            use = "adversarial"
            loss = "mse"
            label_smoothing = 0.1
            """)
    assert [issue.path for issue in err.value.issues] == ["$.stage[0].label_smoothing"]


@pytest.mark.parametrize("shuffle", [False, True])
def test_shuffle_false_trains_on_the_dataset_order(shuffle):
    plugin = Plugin(n_train=64, model="inputs")  # 4 batches of 16 per epoch
    result = run(plugin, f"""
        [[stage]]
        do = "train"
        use = "standard"
        epochs = 2
        shuffle = {str(shuffle).lower()}
        """)
    network = result.state.model
    seen = network.body.seen  # the body sees normalized inputs
    with torch.no_grad():
        dataset_x = network.normalize(result.state.data.train.tensors[0])
    assert [len(b) for b in seen] == [16] * 8
    for epoch in (seen[:4], seen[4:]):
        assert torch.equal(torch.cat(epoch), dataset_x) != shuffle


def test_train_model_honours_shuffle():
    x = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    y = torch.zeros(10, dtype=torch.long)
    for shuffle in (False, True):
        model = InputRecorder(2)
        model.linear = nn.Linear(4, 2)
        torch.manual_seed(0)
        train_model(model, (x, y), trainers_config.StandardConfig(epochs=1, batch_size=4, shuffle=shuffle))
        assert [len(b) for b in model.seen] == [4, 4, 2]
        assert torch.equal(torch.cat(model.seen), x) != shuffle



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
    from deepscope import RunFailed, parse_pipeline, run_pipeline
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
