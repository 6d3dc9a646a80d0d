"""The mtt and stm distillers end to end: experts trained once into the cache and reused, the loss is
exactly 1 with zero steps or a zero lr through the whole pipeline, distillation lowers the matching
loss, STM logs every decision and stops itself, and a SIGKILLed run resumes bit-identical."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepscope import parse_pipeline, run_pipeline
from deepscope import Cache
from deepscope.testing import fresh_store, run_toml, run_until_killed
from deepscope_galaxy import distiller as distiller_module
from deepscope_galaxy.experts import NAMESPACE

from galaxy_testkit import host, pipeline

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("DEEPSCOPE_CACHE", str(path))
    return path


def run(text, **kw):
    return run_toml(text, host(), track=False, **kw)


def _record(monkeypatch, loop=distiller_module.MTTLoop):
    seen = []
    original = loop.iteration

    def record(self, it):
        out = original(self, it)
        seen.append(out)
        return out

    monkeypatch.setattr(loop, "iteration", record)
    return seen


def test_a_second_run_finds_the_experts_in_the_cache_and_trains_none(cache_dir):
    first = run(pipeline(iterations=1))
    assert first.metrics["distill/d/experts/trained"] == 2.0
    entries = [p for p in (cache_dir / NAMESPACE).iterdir() if p.is_dir() and not p.name.startswith(".tmp")]
    assert len(entries) == 1 and sorted(f.name for f in entries[0].iterdir()) == [
        "config.json", "expert-0.pt", "expert-1.pt", "summary.pt"]
    second = run(pipeline("stm", iterations=1, seed=3))  # another distiller and seed: the same experts
    assert second.metrics["distill/d/experts/trained"] == 0.0
    assert second.metrics["distill/d/experts/test_acc_mean"] == first.metrics["distill/d/experts/test_acc_mean"]
    trajectory = torch.load(entries[0] / "expert-0.pt", weights_only=True)
    assert trajectory.shape[0] == 5  # epochs 0..4
    assert not torch.equal(trajectory[0], trajectory[4])
    other = run(pipeline(iterations=1, experts="{ num = 2, epochs = 4, batch = 20, lr = 0.02 }"))
    assert other.metrics["distill/d/experts/trained"] == 2.0  # a changed expert config is a new entry


def test_the_cache_key_holds_data_model_and_expert_config(cache_dir):
    run(pipeline(iterations=1))
    (entry,) = [p for p in (cache_dir / NAMESPACE).iterdir() if p.is_dir()]
    config = Cache(root=cache_dir).entry(NAMESPACE, {}).path.parent / entry.name / "config.json"
    text = config.read_text()
    assert '"tiny"' in text and '"tiny-cnn"' in text and '"epochs": 4' in text


@pytest.mark.parametrize("use", ["mtt", "stm"])
@pytest.mark.parametrize("params", [dict(syn_steps=0), dict(lr_teacher=1e-30)])
def test_with_no_step_the_matching_loss_is_exactly_one(monkeypatch, use, params):
    seen = _record(monkeypatch, distiller_module.STMLoop if use == "stm" else distiller_module.MTTLoop)
    if "lr_teacher" in params:  # a zero lr: STM learns its log, so zero it through the loop's tensor instead
        original = distiller_module.MTTLoop.match

        def zero_lr(self, trajectory, start, target, lr, *, update):
            return original(self, trajectory, start, target, lr * 0, update=update)

        monkeypatch.setattr(distiller_module.MTTLoop, "match", zero_lr)
    run(pipeline(use, iterations=3, lr_lr=0.0, **{k: v for k, v in params.items() if k != "lr_teacher"}))
    assert [m["grand_loss"] for m in seen] == [1.0, 1.0, 1.0]


def test_mtt_lowers_the_matching_loss_on_a_fixed_start(monkeypatch):
    seen = _record(monkeypatch)
    run(pipeline(iterations=30, max_start_epoch=1, lr_img=1.0))
    losses = [m["grand_loss"] for m in seen]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def test_the_set_is_class_major_in_input_space_with_the_learned_lr():
    synthetic = run(pipeline(iterations=2)).state.synthetic
    assert synthetic.space == "input" and synthetic.label_kind == "hard"
    assert synthetic.y.tolist() == [0, 0, 1, 1, 2, 2]
    assert isinstance(synthetic.lr, float) and synthetic.lr != 0.01  # it was learned
    assert synthetic.extras["method"] == "mtt" and len(synthetic.extras["experts_key"]) == 32


def test_stm_logs_every_decision_and_stops_itself_after_fine_tuning(monkeypatch):
    seen = _record(monkeypatch, distiller_module.STMLoop)
    result = run(pipeline("stm", iterations=100, max_duration=10, finetune_every=2, lr_img=1.0,
                          lr_img_floor=0.6, init_epoch=1, max_start_epoch=3))
    # n reaches 20 > max_duration at iteration 19 (pending), then decays at 20, 22, 24: 0.8, 0.64, 0.512 < 0.6
    assert len(seen) == 25
    assert [m["lr_img"] for m in seen[19:]] == pytest.approx([1.0, 0.8, 0.8, 0.64, 0.64, 0.512])
    assert all("next_stage_loss" in m for m in seen[:20]) and not any("next_stage_loss" in m for m in seen[20:])
    assert all(set(m) >= {"grand_loss", "start_epoch_cap", "stage_length", "lr_img", "syn_lr", "fine_tuning",
                          "advanced", "stopped"} for m in seen)
    assert "threshold" in seen[9] and "pearson_r" in seen[9] and "threshold" not in seen[8]
    assert seen[-1]["stopped"] == 1.0 and seen[-1]["fine_tuning"] == 1.0
    assert "below" in result.state.synthetic.extras["stop_reason"]


def test_stm_cycles_start_epochs_below_the_cap(monkeypatch):
    seen = _record(monkeypatch, distiller_module.STMLoop)
    run(pipeline("stm", iterations=6, init_epoch=2, max_start_epoch=3))
    assert [m["start_epoch"] for m in seen] == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]


def test_stm_independent_lr_keeps_one_lr_per_start_epoch():
    synthetic = run(pipeline("stm", iterations=4, init_epoch=3, max_start_epoch=3, lr_mode="independent")).state.synthetic
    assert isinstance(synthetic.lr, torch.Tensor) and synthetic.lr.shape == (3,)
    assert len(set(synthetic.lr.tolist())) == 3  # each start epoch learned its own


@pytest.fixture
def one_thread():
    """The killed part runs with one thread; CPU float sums depend on the thread count, so the parts run
    in this process (the resume and the reference) use one thread too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("use,params,kill_at", [
    ("mtt", dict(iterations=9, batch_syn=4), 5),
    ("stm", dict(iterations=14, max_duration=10, finetune_every=2, lr_img_floor=0.7, lr_mode="independent",
                 init_epoch=2), 11),
])
def test_a_sigkilled_distillation_resumes_bit_identical(tmp_path, use, params, kill_at, one_thread):
    text = pipeline(use, **params)
    uri = fresh_store(tmp_path / "store")
    run_id = run_until_killed(text, uri, host="galaxy_testkit:host", key="distill/d/grand_loss", step=kill_at,
                              paths=[HERE])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    h = host()
    resumed = run_pipeline(parse_pipeline(text, h.registry), h, tracking_uri=uri, resume_run_id=run_id)
    reference = run(text)
    assert resumed.status == "FINISHED"
    assert torch.equal(resumed.state.synthetic.x, reference.state.synthetic.x)
    ref_lr, res_lr = reference.state.synthetic.lr, resumed.state.synthetic.lr
    assert torch.equal(torch.as_tensor(res_lr), torch.as_tensor(ref_lr))
    history = client.get_metric_history(run_id, "distill/d/grand_loss")
    steps = sorted(m.step for m in history)
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > kill_at  # every iteration logged once


CONCURRENT = """
import sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {here!r})
from galaxy_testkit import host
from deepscope.testing import run_toml
result = run_toml({text!r}, host(), track=False)
print("TRAINED", result.metrics["distill/d/experts/trained"], result.state.synthetic.extras["experts_key"])
"""


def test_concurrent_workers_train_the_experts_once(cache_dir):
    text = pipeline(iterations=1, experts="{ num = 3, epochs = 4, batch = 20 }")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEEPSCOPE_CACHE": str(cache_dir)}
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT.format(here=str(HERE), text=text)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    reports = [line.split() for out, _ in outputs for line in out.splitlines() if line.startswith("TRAINED")]
    assert sorted(float(r[1]) for r in reports) == [0.0, 3.0]  # one built the entry, the other waited and read it
    assert reports[0][2] == reports[1][2]
