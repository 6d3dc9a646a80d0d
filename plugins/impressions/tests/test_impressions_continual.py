"""The continual trainer in tiny pipelines: no forgetting, bases, errors, and resume between tasks."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

import deepscope_impressions
import deepscope_standard
from deepscope import ConfigError, hookimpl, parse_pipeline, run_pipeline
from deepscope.testing import make_host, run_toml

from deepscope_impressions.evaluation import RECORD, accuracy

MLP = 'use = "supermask-mlp"\nwidths = [32]'
LENET = 'use = "supermask-lenet"\nchannels = [6]\nwidths = [64]'


@pytest.mark.parametrize("model,lr", [(MLP, 0.01), (LENET, 0.001)], ids=["mlp", "lenet"])
def test_an_old_tasks_accuracy_is_bit_identical_after_later_tasks(host, pipeline, model, lr):
    result = run_toml(pipeline(model, lr=lr), host, track=False)
    rec = result.state.extras[RECORD]
    matrix = rec["matrix"]
    assert rec["learned"] == [0, 1, 2, 3] and [len(r) for r in matrix] == [1, 2, 3, 4]
    for j in range(4):
        column = [row[j] for row in matrix[j:]]
        assert column == [column[0]] * len(column)  # exact equality: nothing old moves
    assert matrix[1][0] > 0.2 and matrix[1][1] > 0.2  # learned (chance 0.1)
    assert rec["method"] == {"0": "supsup", "1": "supsup", "2": "impress", "3": "impress"}
    assert rec["basis"]["2"] == [0, 1]
    assert result.state.masks == {}  # supermasks are model state, never the core's pruning masks


def test_impress_learns_only_alphas_and_homogeneous_and_random_bases_fill_spare_slots(host, pipeline):
    result = run_toml(pipeline(basis="homogeneous").replace("alpha_l1", "mask_lr = 0.003\nalpha_l1"), host,
                      track=False)
    rec, body = result.state.extras[RECORD], result.state.model.body
    assert rec["slots"] == {"4": "task 0 repeat 0", "5": "task 0 repeat 1"} and rec["basis"]["3"] == [4, 5]
    assert [row[0] for row in rec["matrix"]] == [rec["matrix"][0][0]] * 4  # task 0's own mask and norms untouched
    assert not torch.equal(body.slot_mask(4), body.slot_mask(5)) and not torch.equal(body.slot_mask(4), body.slot_mask(0))
    body.force_slot(4)  # a repeated mask of task 0 solves task 0
    try:
        with torch.no_grad():
            body.set_task(0)
            repeat_acc = accuracy(result.state.model, result.state.data.task(0).test, "cpu")
    finally:
        body.force_slot(None)
    assert repeat_acc > 0.2
    random = run_toml(pipeline(basis="random"), host, track=False)
    rec = random.state.extras[RECORD]
    assert rec["slots"] == {"4": "random", "5": "random"}
    layer = random.state.model.body.masked_layers()[0]
    assert torch.equal(layer.scores[2], body.masked_layers()[0].scores[2])  # unused score slots never trained
    assert float(layer.alphas[2].abs().sum()) > 0 and not torch.equal(layer.alphas[2][[4, 5]], torch.full((2,), 0.5))


def test_a_heterogeneous_basis_larger_than_the_learned_masks_is_a_config_error(host, pipeline):
    text = pipeline().replace("num_masks = 2", "num_masks = 3")
    with pytest.raises(ConfigError) as err:
        run_toml(text, host, track=False)
    assert "$.stage[1].num_masks" in str(err.value) and "needs 3 tasks learned" in str(err.value)


class KillAfterTasks:
    """Ctrl-C when the stage named ``stage`` starts training its task after ``tasks`` tasks (after a checkpoint)."""

    def __init__(self, stage: str, tasks: int):
        self.stage, self.tasks, self.seen = stage, tasks, 0

    @hookimpl
    def deepscope_metrics_logged(self, run, metrics, step):
        if any(k.startswith(f"train/{self.stage}/") and k.endswith("/loss") for k in metrics):
            self.seen += 1
            if self.seen == self.tasks + 1:
                raise KeyboardInterrupt


def test_a_run_killed_between_tasks_and_resumed_ends_with_the_same_accuracy_matrix(tmp_mlflow, pipeline):
    text = pipeline(extra='\n[[stage]]\ndo = "probe"\nuse = "continual-accuracy"\nplot = false\n')
    host = make_host(deepscope_standard, deepscope_impressions)
    reference = run_toml(text, host, tracking_uri=tmp_mlflow)
    with pytest.raises(KeyboardInterrupt):
        run_toml(text, make_host(deepscope_standard, deepscope_impressions, KillAfterTasks("impress", 1)),
                 tracking_uri=tmp_mlflow)
    client = MlflowClient(tracking_uri=tmp_mlflow)
    killed = next(r for r in client.search_runs([client.get_experiment_by_name("deepscope").experiment_id])
                  if r.info.status == "KILLED")
    resumed = run_pipeline(parse_pipeline(text, host.registry), host, tracking_uri=tmp_mlflow,
                           resume_run_id=killed.info.run_id)
    assert resumed.state.extras[RECORD] == reference.state.extras[RECORD]
    assert resumed.metrics["probe/continual-accuracy/avg_acc"] == reference.metrics["probe/continual-accuracy/avg_acc"]
