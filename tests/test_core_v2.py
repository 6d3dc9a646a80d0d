"""Core v2: named datasets, plugin-added kinds, step loops, attack setup, models by spec, tasks, tables."""

from __future__ import annotations

import json

import pytest
import torch
from mlflow.tracking import MlflowClient

import toy_plugin
import v2_toy_plugin
from deepscope import ConfigError, LinearPreprocess, SyntheticData, load_synthetic
from deepscope.config import parse_pipeline
from deepscope.runner import run_pipeline
from deepscope.testing import make_host, run_toml

HEAD = """
[run]
name = "v2"
seed = 5

[data]
use = "tiny"
n_train = 96

[model]
use = "tiny-mlp"
hidden = 16
"""


def _host():
    return make_host(toy_plugin, v2_toy_plugin)


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_pipeline(text, _host().registry, file="p.toml")
    return str(info.value).splitlines()


# --------------------------------------------------------------------------- named datasets


def test_a_train_stage_learns_the_wrong_labels_of_a_distilled_set_and_is_tested_on_real_data(tmp_mlflow):
    """The oracle: labels shifted by one class are learnable only from the distilled set."""
    result = run_toml(HEAD + """
[[stage]]
do = "distill"
use = "relabel"
name = "wrong"

[[stage]]
do = "train"
use = "sgd"
data = "synthetic"
epochs = 60
lr = 0.5

[[stage]]
do = "probe"
use = "shifted-accuracy"
""", _host(), tracking_uri=tmp_mlflow)
    m = result.metrics
    assert m["probe/shifted-accuracy/shifted_acc"] > 0.8  # it learned the distilled mapping...
    assert m["probe/shifted-accuracy/acc"] < 0.2  # ...which the real test labels contradict
    assert result.state.data is result.state.real_data  # the binding ended with its stage
    assert set(result.state.synthetic_sets) == {"synthetic/wrong"}


def test_data_binds_the_training_split_only_for_its_stage(tmp_mlflow):
    result = run_toml(HEAD + """
[[stage]]
do = "distill"
use = "relabel"
n = 10
name = "first"

[[stage]]
do = "distill"
use = "relabel"
n = 7
shift = 2
name = "second"

[[stage]]
do = "probe"
use = "train-set"
name = "latest"
data = "synthetic"

[[stage]]
do = "probe"
use = "train-set"
name = "named"
data = "synthetic/first"

[[stage]]
do = "probe"
use = "train-set"
name = "real"
""", _host(), tracking_uri=tmp_mlflow)
    m = result.metrics
    assert m["probe/latest/train_size"] == 7 and m["probe/named/train_size"] == 10
    assert m["probe/real/train_size"] == 96
    assert m["probe/latest/test_size"] == m["probe/real/test_size"] == 32  # test metrics stay on real data
    real_first = int(result.state.real_data.tensors("train")[1][0])
    assert m["probe/latest/first_label"] == (real_first + 2) % 3
    assert m["probe/named/first_label"] == (real_first + 1) % 3


def test_validate_rejects_data_that_no_earlier_stage_provides():
    probe = '\n[[stage]]\ndo = "probe"\nuse = "train-set"\ndata = "{}"\n'
    assert _errors(HEAD + probe.format("synthetic")) == [
        'p.toml: $.stage[0].data: no earlier stage distills a synthetic set; add a do = "distill" stage before '
        'this one, or remove `data`']
    distill = '\n[[stage]]\ndo = "distill"\nuse = "relabel"\nname = "kip"\n'
    lines = _errors(HEAD + distill + probe.format("synthetic/kpi"))
    assert lines[0].startswith("p.toml: $.stage[1].data: unknown dataset 'synthetic/kpi' (did you mean "
                               "'synthetic/kip'?)")
    later = _errors(HEAD + probe.format("synthetic/kip") + distill)  # provided only after it
    assert later[0].startswith("p.toml: $.stage[0].data: unknown dataset 'synthetic/kip'")
    assert _errors(HEAD + distill.replace('name = "kip"', 'data = "synthetic"'))[0].startswith(
        "p.toml: $.stage[0].data:")  # distill stages do not choose their data: a component key, unknown


def test_synthetic_sets_keep_their_labels_lr_and_kind_and_the_artifact_reads_back(tmp_mlflow, tmp_path):
    result = run_toml(HEAD + '\n[[stage]]\ndo = "distill"\nuse = "relabel"\nsoft = true\n', _host(),
                      tracking_uri=tmp_mlflow)
    synthetic = result.state.synthetic
    assert synthetic.label_kind == "soft" and synthetic.y.dtype == torch.float32 and synthetic.lr == 0.1
    client = MlflowClient(tracking_uri=tmp_mlflow)
    path = client.download_artifacts(result.run_id, "distill/relabel/synthetic.pt", str(tmp_path))
    again = load_synthetic(path)
    assert torch.equal(again.x, synthetic.x) and torch.equal(again.y, synthetic.y)
    assert again.label_kind == "soft" and again.lr == 0.1 and again.space == "pixel"
    hard = run_toml(HEAD + '\n[[stage]]\ndo = "distill"\nuse = "relabel"\n', _host(), track=False).state.synthetic
    assert hard.label_kind == "hard" and hard.y.dtype == torch.int64 and torch.equal(hard.lr, torch.tensor([0.1, 0.05]))
    with pytest.raises(ValueError, match="hard labels must be integer"):
        SyntheticData(torch.zeros(2, 1), torch.zeros(2), label_kind="hard")


def test_input_space_sets_reach_the_body_unchanged_through_an_invertible_preprocessing():
    from deepscope import Network

    torch.manual_seed(0)
    matrix = torch.randn(4, 4) + 3 * torch.eye(4)
    body = torch.nn.Identity()
    net = Network(body, (0.5,), (0.25,), preprocess=LinearPreprocess(matrix, torch.randn(4)))
    z = torch.randn(5, 1, 2, 2)  # whitened-space inputs, not in [0, 1]
    assert torch.allclose(net(net.from_input(z)), z, atol=1e-4)
    x = torch.rand(5, 1, 2, 2)
    assert torch.allclose(net.from_input(net.to_input(x)), x, atol=1e-5)


# --------------------------------------------------------------------------- kinds a plugin adds


def test_a_plugin_adds_a_component_kind_and_a_stage_kind(tmp_mlflow):
    result = run_toml(HEAD + '\n[[stage]]\ndo = "fit"\nuse = "mean"\nscale = 2.0\n', _host(), tracking_uri=tmp_mlflow)
    x, _ = result.state.data.tensors("train")
    assert result.metrics["fit/mean/mean"] == pytest.approx(2 * float(x.mean()))
    registry = _host().registry
    assert registry.stage_kind("fit").component_kind == "fitter" and "fitter" in registry.kinds
    assert _errors(HEAD + '\n[[stage]]\ndo = "fit"\nuse = "nope"\n')[0].startswith(
        "p.toml: $.stage[0].use: unknown fitter 'nope'.")


def test_list_and_show_cover_plugin_added_kinds(monkeypatch, capsys):
    from deepscope.cli import main
    from deepscope.plugins import set_host

    monkeypatch.setenv("DEEPSCOPE_PLUGINS_MODULES", "v2_toy_plugin")
    monkeypatch.setenv("COLUMNS", "200")
    set_host(None)
    try:
        assert main(["list", "stages"]) == 0
        captured = capsys.readouterr()
        out = captured.out + captured.err
        assert "fit" in out and "fitter" in out and "distill" in out
        assert main(["list", "fitters"]) == 0
        assert "mean" in capsys.readouterr().out
        assert main(["show", "stage", "fit"]) == 0
        shown = capsys.readouterr().out
        assert "uses: a fitter" in shown and "provides to later stages: fitted" in shown
        assert main(["show", "fitter", "mean"]) == 0
        assert "scale" in capsys.readouterr().out
    finally:
        set_host(None)


def test_a_stage_kind_naming_an_unknown_component_kind_fails_to_load():
    import types

    from deepscope import PluginLoadError, hookimpl

    module = types.ModuleType("bad_stage_kind")

    @hookimpl
    def deepscope_register_stage_kinds(register):
        register("solve", "solver", lambda state, stage, ctx: None)

    module.deepscope_register_stage_kinds = deepscope_register_stage_kinds
    with pytest.raises(PluginLoadError, match="stage kind 'solve' uses component kind 'solver'"):
        make_host(module).registry


# --------------------------------------------------------------------------- step loops


STEPS = HEAD + """
[[stage]]
do = "distill"
use = "steps"
steps = 12
probes = [{ use = "synthetic-norm", every_steps = 4 }]

[[stage]]
do = "probe"
use = "synthetic-norm"
"""


def test_step_loops_log_per_step_without_touching_epochs_and_probe_the_iterate(tmp_mlflow):
    result = run_toml(STEPS, _host(), tracking_uri=tmp_mlflow)
    client = MlflowClient(tracking_uri=tmp_mlflow)
    steps = [m.step for m in client.get_metric_history(result.run_id, "distill/steps/loss")]
    assert sorted(steps) == list(range(1, 13)) and result.state.epoch == 0
    probe = client.get_metric_history(result.run_id, "distill/steps/probe/synthetic-norm/norm")
    assert sorted(m.step for m in probe) == [4, 8, 12]
    norms = {m.step: m.value for m in probe}
    assert norms[4] != norms[12]  # each probe saw the iterate of its step, not a fixed set
    final = result.metrics["probe/synthetic-norm/norm"]
    assert norms[12] == pytest.approx(final, rel=1e-6)  # the last iterate is what the stage returned
    assert len(result.state.extras["v2toy/history"]) == 12


def test_periodic_probe_schedules_are_checked():
    bad = STEPS.replace("every_steps = 4", "every_steps = 4, every = 2")
    assert _errors(bad)[0] == "p.toml: $.stage[0].probes[0].every_steps: give `every` (epochs) or `every_steps`, not both"
    assert _errors(STEPS.replace("every_steps = 4", "every_steps = 0"))[0].startswith(
        "p.toml: $.stage[0].probes[0].every_steps: must be an integer >= 1")


def test_step_checkpoints_follow_every_steps_and_minutes():
    from deepscope.checkpoint import Checkpointer

    now = [0.0]
    by_steps = Checkpointer("unused", "f", None, every_steps=5, clock=lambda: now[0])
    assert [s for s in range(1, 16) if by_steps.due_step(s)] == [5, 10, 15]
    assert not by_steps.due(5)  # epochs follow checkpoint_every, which is off here
    by_time = Checkpointer("unused", "f", None, minutes=1.5, clock=lambda: now[0])
    assert not by_time.due_step(1)
    now[0] = 90.0
    assert by_time.due_step(2) and by_time.due(1)


# --------------------------------------------------------------------------- attacks, models, tasks


def test_an_attack_setup_runs_once_per_stage_before_its_batches(tmp_mlflow):
    v2_toy_plugin.MeanPull.setups = 0
    result = run_toml(HEAD + """
[[stage]]
do = "attack"
use = "mean-pull"
batch_size = 8
eps = 0.05
""", _host(), tracking_uri=tmp_mlflow)
    assert v2_toy_plugin.MeanPull.setups == 1  # 32 test examples in 4 batches, one setup
    assert result.metrics["attack/mean-pull/max_linf"] == pytest.approx(0.05, abs=1e-6)


def test_build_model_by_spec_and_seed_leaves_the_global_rng_alone():
    host = _host()
    state = run_toml(HEAD, host, track=False).state
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = state.build_model(seed=7)
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG stream is untouched
    b = state.build_model(seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    wide = state.build_model({"use": "tiny-mlp", "hidden": 5}, seed=1)
    assert wide.body[1].out_features == 5
    assert isinstance(state.build_model("nearest").body, v2_toy_plugin.Nearest)
    with pytest.raises(ConfigError, match="hidden"):
        state.build_model({"use": "tiny-mlp", "hidden": -1})


def test_a_non_parametric_model_round_trips_its_extra_state_through_checkpoint_and_resume(tmp_mlflow):
    from deepscope import hookimpl
    from deepscope.checkpoint import checkpoint_path, load_checkpoint

    class InterruptBeforeStage:
        """Ctrl-C as stage ``index`` starts: the run ends KILLED after the previous stage's checkpoint."""

        def __init__(self, index):
            self.index = index

        @hookimpl
        def deepscope_stage_started(self, run, stage):
            if stage.index == self.index:
                raise KeyboardInterrupt

    text = HEAD.replace('use = "tiny-mlp"\nhidden = 16', 'use = "nearest"').replace("seed = 5", "seed = 5\ncheckpoint_every = 1")
    text += '\n[[stage]]\ndo = "train"\nuse = "memorize"\nn = 40\n\n[[stage]]\ndo = "probe"\nuse = "shifted-accuracy"\n'
    reference = run_toml(text, _host(), tracking_uri=tmp_mlflow)
    with pytest.raises(KeyboardInterrupt):
        run_toml(text, make_host(toy_plugin, v2_toy_plugin, InterruptBeforeStage(1)), tracking_uri=tmp_mlflow)
    client = MlflowClient(tracking_uri=tmp_mlflow)
    killed = next(r for r in client.search_runs([client.get_experiment_by_name("deepscope").experiment_id])
                  if r.info.status == "KILLED")
    payload = load_checkpoint(checkpoint_path(tmp_mlflow, killed.info.run_id))
    assert payload["next_stage"] == 1 and len(payload["state"]["model"]["body._extra_state"]["x"]) == 40

    host = _host()
    resumed = run_pipeline(parse_pipeline(text, host.registry), host, tracking_uri=tmp_mlflow,
                           resume_run_id=killed.info.run_id)
    body = resumed.state.model.body  # a fresh model, whose support set came back from the checkpoint
    assert torch.equal(body.support_x, reference.state.model.body.support_x) and len(body.support_x) == 40
    assert resumed.metrics == reference.metrics


def test_a_task_sequence_with_a_task_aware_model_logs_one_row_of_the_accuracy_matrix(tmp_mlflow):
    result = run_toml("""
[run]
name = "tasks"
seed = 0

[data]
use = "two-tasks"

[model]
use = "task-heads"

[[stage]]
do = "train"
use = "tasks"

[[stage]]
do = "probe"
use = "task-acc"
name = "own"

[[stage]]
do = "probe"
use = "task-acc"
name = "swapped"
head = "swapped"
""", _host(), tracking_uri=tmp_mlflow)
    m = result.metrics
    assert result.state.info.num_tasks == 2 and result.state.model.task_aware
    assert m["probe/own/task_0/acc"] > 0.8 and m["probe/own/task_1/acc"] > 0.8
    assert m["probe/swapped/task_0/acc"] < 0.5 and m["probe/swapped/task_1/acc"] < 0.5  # heads are per task
    assert result.state.masks == {}  # task state is the model's own; pruning masks are untouched
    data = result.state.data
    assert torch.equal(data.task(1).tensors("test")[1], 2 - data.task(0).tensors("test")[1])
    with pytest.raises(IndexError, match="has 2 tasks"):
        data.task(2)


def test_log_table_writes_csv_and_json(tmp_mlflow, tmp_path):
    import attrs

    from deepscope import hookimpl

    class Table:
        def __init__(self, config):
            pass

        def measure(self, state, ctx):
            ctx.log_table("eigen", [{"index": 0, "acc": torch.tensor(0.5)}, {"index": 1, "acc": 0.25, "note": "x"}])
            return {}

    @attrs.define
    class Plugin:
        @hookimpl
        def deepscope_register_probes(self, register):
            register("table", Table)

    result = run_toml(HEAD + '\n[[stage]]\ndo = "probe"\nuse = "table"\n', make_host(toy_plugin, Plugin()),
                      tracking_uri=tmp_mlflow)
    client = MlflowClient(tracking_uri=tmp_mlflow)
    csv_path = client.download_artifacts(result.run_id, "probe/table/eigen.csv", str(tmp_path))
    json_path = client.download_artifacts(result.run_id, "probe/table/eigen.json", str(tmp_path))
    assert open(csv_path).read() == "index,acc,note\n0,0.5,\n1,0.25,x\n"
    assert json.loads(open(json_path).read()) == [{"index": 0, "acc": 0.5}, {"index": 1, "acc": 0.25, "note": "x"}]


def test_non_finite_floats_are_rejected_with_their_key_path():
    lines = _errors(HEAD + '\n[[stage]]\ndo = "attack"\nuse = "mean-pull"\neps = inf\n')
    assert lines == ["p.toml: $.stage[0].eps: must be a finite number (got inf); attack 'mean-pull' does not "
                     "accept inf or nan here"]
    assert _errors(HEAD + '\n[[stage]]\ndo = "attack"\nuse = "mean-pull"\neps = nan\n')[0].startswith(
        "p.toml: $.stage[0].eps: must be a finite number (got nan)")


def test_pruner_and_attack_configs_must_subclass_the_core_bases():
    import types

    from deepscope import hookimpl

    module = types.ModuleType("loose_attack")

    @hookimpl
    def deepscope_register_attacks(register):
        register("loose", lambda config: None, v2_toy_plugin.RelabelConfig)

    module.deepscope_register_attacks = deepscope_register_attacks
    with pytest.raises(TypeError, match="must subclass deepscope.AttackConfig"):
        make_host(module).registry


def test_components_are_checked_against_the_data_shape_before_anything_loads():
    text = """
[run]
name = "check"
seed = 0

[data]
use = "shaped"
side = 4

[model]
use = "pooler"
pools = 3
"""
    v2_toy_plugin.loads.clear()
    assert _errors(text) == ["p.toml: $.model.pools: 3 poolings need inputs of at least 8 pixels, these have 4"]
    assert v2_toy_plugin.loads == []  # validate (and run, which parses first) never loaded the data
    result = run_toml(text.replace("side = 4", "side = 8"), _host(), track=False)
    assert result.status == "FINISHED" and v2_toy_plugin.loads == [8]


def test_a_prune_stage_logs_requested_and_achieved_density_and_warns_on_a_miss(tmp_mlflow):
    import io

    from rich.console import Console

    from deepscope import parse_pipeline, run_pipeline

    text = HEAD + '\n[[stage]]\ndo = "prune"\nuse = "mag"\nsparsity = {}\n'
    host = _host()
    out = io.StringIO()
    exact = run_pipeline(parse_pipeline(text.format(0.5), host.registry), host, track=False,
                         console=Console(file=out, width=200))
    assert exact.metrics["prune/mag/requested_density"] == 0.5
    assert exact.metrics["prune/mag/achieved_density"] == pytest.approx(0.5, abs=0.01)
    assert "warning" not in out.getvalue()
    # a pruner that ignores the request (keeps half) when 0.3 was asked: the stage says so
    host = make_host(toy_plugin, v2_toy_plugin, v2_toy_plugin.HalfPruner())
    missed = run_pipeline(parse_pipeline(text.format(0.7).replace('"mag"', '"half"'), host.registry), host,
                          track=False, console=Console(file=out, width=200))
    assert missed.metrics["prune/half/achieved_density"] == pytest.approx(0.5, abs=0.01)
    assert "prune/half: pruner 'half' kept density 0.5" in out.getvalue() and "off the requested 0.3" in out.getvalue()


# --------------------------------------------------------------------------- checks against earlier stages

AFTER_ATTACK = HEAD + """
[[stage]]
do = "train"
use = "sgd"

[[stage]]
do = "attack"
use = "mean-pull"
name = "pull"

[[stage]]
do = "probe"
use = "after-attack"
attack = "{attack}"
"""


def test_check_stages_sees_exactly_the_earlier_stages_and_a_run_reads_them_back():
    v2_toy_plugin.stage_checks.clear()
    result = run_toml(AFTER_ATTACK.format(attack="pull"), _host(), track=False)
    assert v2_toy_plugin.stage_checks == [(2, [0, 1])]  # only the probe's config defines check_stages
    assert result.metrics["probe/after-attack/read_back"] == result.metrics["attack/pull/robust_acc"]


def test_validate_rejects_a_check_stages_error_with_exit_2_naming_the_stage_key(tmp_path, capsys):
    from deepscope.cli import main
    from deepscope.plugins import set_host

    path = tmp_path / "p.toml"
    path.write_text(AFTER_ATTACK.format(attack="mean-pull"))  # the stage is named "pull": its use is no label
    set_host(_host())
    try:
        assert main(["validate", str(path)]) == 2
    finally:
        set_host(None)
    err = " ".join(capsys.readouterr().err.split())
    assert f"{path}: $.stage[2].attack: no earlier attack stage is labelled 'mean-pull' (attack stages before " \
           "this one: ['pull']); add one or fix the label" in err
    assert "Traceback" not in err


def test_a_value_error_from_check_stages_is_located_by_its_attribute_name():
    text = AFTER_ATTACK.format(attack="pull") + "most = 1\n"
    assert _errors(text) == ["p.toml: $.stage[2].most: must be >= 2 (got 1)"]


def test_check_stages_is_skipped_after_an_earlier_stage_failed_to_parse():
    v2_toy_plugin.stage_checks.clear()
    text = AFTER_ATTACK.format(attack="pull").replace('use = "mean-pull"', 'use = "mean-pul"')
    lines = _errors(text)
    assert len(lines) == 1 and lines[0].startswith("p.toml: $.stage[1].use:")  # no cascade from stage 2
    assert v2_toy_plugin.stage_checks == []


def test_a_periodic_probe_is_shown_the_stages_before_it_and_the_stage_that_runs_it_last():
    v2_toy_plugin.stage_checks.clear()
    text = (HEAD + '\n[[stage]]\ndo = "attack"\nuse = "mean-pull"\n\n[[stage]]\ndo = "train"\nuse = "sgd"\n'
            'probes = [{ use = "after-attack", most = 1 }]\n')
    assert _errors(text) == ["p.toml: $.stage[1].probes[0].most: must be >= 2 (got 1)"]
    assert v2_toy_plugin.stage_checks == [(2, [0, 1])]
