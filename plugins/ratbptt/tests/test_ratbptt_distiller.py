"""The distillers' oracles: unit-norm initialization, window starts, the EMA clipping rule, non-negative
labels, beta = 0 freezing earlier blocks bit for bit, block layout, a tiny problem that distillation
actually improves, and a SIGKILLed run that resumes bit-identical."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deepscope import parse_pipeline
from deepscope import run_pipeline
from deepscope.testing import fresh_store, run_toml, run_until_killed
from deepscope_ratbptt import distiller as distiller_module
from deepscope_ratbptt.sampling import InnerSampler, RealBatches, unit_norm_noise
from deepscope_ratbptt.windows import WindowSchedule

from ratbptt_testkit import CLASSES, host, pipeline

HERE = Path(__file__).parent


def run(text, **kw):
    return run_toml(text, host(), track=False, **kw)


def test_unit_norm_noise_rows_have_unit_l2_norm():
    x = unit_norm_noise(12, (1, 6, 6), torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.flatten(1).norm(dim=1), torch.ones(12))


@pytest.mark.parametrize("mode", ["random", "random-per-epoch"])
def test_window_starts_cover_0_to_t_minus_w_inclusive(mode):
    schedule = WindowSchedule(mode, unroll=7, window=3, generator=torch.Generator().manual_seed(1))
    starts = {schedule.start(new_pass=True) for _ in range(400)}
    assert starts == {0, 1, 2, 3, 4}


def test_random_per_epoch_draws_once_per_pass_and_fixed_is_t_minus_w():
    schedule = WindowSchedule("random-per-epoch", unroll=30, window=3, generator=torch.Generator().manual_seed(2))
    first = schedule.start(new_pass=True)
    assert all(schedule.start(new_pass=False) == first for _ in range(20))
    fixed = WindowSchedule("fixed", unroll=30, window=3, generator=torch.Generator())
    assert {fixed.start(new_pass=p) for p in (True, False, True)} == {27}
    full = WindowSchedule("random", unroll=5, window=5, generator=torch.Generator())
    assert full.start(new_pass=True) == 0  # window = unroll: full BPTT


def test_moving_window_slides_by_w_when_the_pass_loss_stalls():
    schedule = WindowSchedule("moving", unroll=10, window=3, generator=torch.Generator(), patience=1)
    assert schedule.start(True) == 0
    schedule.record(1.0, pass_ends=True)   # best so far
    schedule.record(2.0, pass_ends=True)   # no better: move
    assert schedule.start(True) == 3
    for _ in range(10):
        schedule.record(5.0, pass_ends=True)
        schedule.record(5.0, pass_ends=True)
    assert schedule.start(True) == 7  # capped at T - W


def test_inner_batches_take_batch_per_class_of_each_sampled_class_and_earlier_blocks_whole():
    classes = torch.tensor([0, 1, 2, 0, 0, 1, 1, 2, 2])  # block 0: first 3 images; block 1: the next 6
    block = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1])
    sampler = InnerSampler(classes, 3, batch_per_class=1, classes_per_batch=2, generator=torch.Generator())
    sampler.set_active(block == 1, block < 1)
    for _ in range(30):
        idx = sampler.indices()
        picked = classes[idx]
        assert len(idx) == 4 and len(set(picked.tolist())) == 2  # 2 classes: 1 old + 1 new image each
        assert set(idx[block[idx] == 0].tolist()) == {c for c in range(3) if c in picked.tolist()}


def test_real_batches_cover_a_pass_without_repeats():
    real = RealBatches(10, 3, torch.Generator().manual_seed(0))
    seen, flags = [], []
    for _ in range(3):
        idx, opens, closes = real.next()
        seen += idx.tolist()
        flags.append((opens, closes))
    assert len(set(seen)) == 9 and flags == [(True, False), (False, False), (False, True)]
    assert real.next()[1]  # a new pass


def _record(monkeypatch):
    """Every meta-step's metrics, and the images' gradient norm after clipping."""
    seen = {"metrics": [], "clipped_norms": []}
    meta_step, clip = distiller_module.MetaLoop.meta_step, distiller_module.MetaLoop._clip

    def record_step(self, step, block):
        out = meta_step(self, step, block)
        seen["metrics"].append(out)
        return out

    def record_clip(self, grads, norm):
        out = clip(self, grads, norm)
        seen["clipped_norms"].append(grads["images"].norm().item())
        return out

    monkeypatch.setattr(distiller_module.MetaLoop, "meta_step", record_step)
    monkeypatch.setattr(distiller_module.MetaLoop, "_clip", record_clip)
    return seen


def test_the_ema_starts_at_the_first_norm_and_clipped_norms_are_at_most_twice_it(monkeypatch):
    seen = _record(monkeypatch)
    run(pipeline(meta_steps=12, lr=0.5, clip_coef=0.99))
    m = seen["metrics"]
    assert m[0]["ema_norm"] == m[0]["grad_norm"] and m[0]["clipped"] == 0.0
    ema = m[0]["grad_norm"]
    for step, norm_after in zip(m[1:], seen["clipped_norms"][1:]):
        ema = ema - (1 - 0.99) * (ema - step["grad_norm"])
        assert step["ema_norm"] == pytest.approx(ema, rel=1e-12)
        assert norm_after <= 2 * step["ema_norm"] * (1 + 1e-5)
        assert step["clipped"] == float(step["grad_norm"] > 2 * step["ema_norm"])


def test_the_graph_memory_metric_is_flat_in_the_unroll_and_grows_with_the_window(monkeypatch):
    """On a CPU every meta-step logs graph_mem_mb, the peak of the autograd graph's saved tensors (without
    augmentation, whose flip or rotation changes what is saved, it is the same at every step)."""
    seen = _record(monkeypatch)
    peaks = {}
    for unroll, window in [(6, 3), (12, 3), (12, 6)]:
        seen["metrics"].clear()
        run(pipeline(meta_steps=2, unroll=unroll, window=window, start="fixed", syn_aug="none", real_aug="none"))
        values = {m["graph_mem_mb"] for m in seen["metrics"]}
        assert len(values) == 1 and values.pop() > 0
        peaks[unroll, window] = seen["metrics"][0]["graph_mem_mb"]
    assert peaks[6, 3] == peaks[12, 3] < peaks[12, 6]


def test_a_gradient_spike_is_clipped_to_twice_the_ema_and_the_ema_sees_the_unclipped_norm():
    from types import SimpleNamespace

    loop = SimpleNamespace(progress={"ema": None}, c=SimpleNamespace(clip_coef=0.9, clip=True))
    ema = None
    for norm in (1.0, 1.0, 8.0, 1.5, 30.0):
        grads = {"images": torch.full((4,), norm / 2)}  # a vector of norm `norm`
        ema_out, clipped = distiller_module.MetaLoop._clip(loop, grads, norm)
        ema = norm if ema is None else ema - 0.1 * (ema - norm)
        assert ema_out == pytest.approx(ema, rel=1e-12)
        assert clipped == (norm > 2 * ema)
        expected = min(norm, 2 * ema * norm / (norm + 1e-6)) if clipped else norm
        assert grads["images"].norm().item() == pytest.approx(expected, rel=1e-6)
    assert loop.progress["ema"] == pytest.approx(ema)


def test_learned_labels_stay_non_negative_and_are_soft():
    result = run(pipeline(learn_labels=True, lr=0.5, label_lr_scale=0.1, meta_steps=8))
    synthetic = result.state.synthetic
    assert synthetic.label_kind == "soft" and synthetic.y.shape == (2 * CLASSES, CLASSES)
    assert (synthetic.y >= 0).all()
    assert not torch.equal(synthetic.y, torch.eye(CLASSES).repeat_interleave(2, 0))  # they were learned


def test_the_set_is_in_the_model_input_space_with_its_class_layout():
    synthetic = run(pipeline(meta_steps=2)).state.synthetic
    assert synthetic.space == "input" and synthetic.label_kind == "hard"
    assert synthetic.y.tolist() == [0, 0, 1, 1, 2, 2]
    assert synthetic.extras["method"] == "rat-bptt"


def _boost_images(beta, monkeypatch):
    snapshots = {}

    def capture(self, step, block):
        out = meta_step(self, step, block)
        snapshots[step] = self.images.detach().clone()
        return out

    meta_step = distiller_module.MetaLoop.meta_step
    monkeypatch.setattr(distiller_module.MetaLoop, "meta_step", capture)
    result = run(pipeline("boost-dd", blocks=[1, 2], beta=beta, meta_steps=4))
    monkeypatch.setattr(distiller_module.MetaLoop, "meta_step", meta_step)
    return snapshots, result.state.synthetic


def test_beta_zero_leaves_earlier_blocks_bit_identical_and_beta_positive_moves_them(monkeypatch):
    frozen, synthetic = _boost_images(0.0, monkeypatch)
    first_block = synthetic.extras["block"] == 0
    assert synthetic.extras["block"].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert synthetic.y.tolist() == [0, 1, 2, 0, 0, 1, 1, 2, 2]
    after_block_0 = frozen[3]
    assert torch.equal(synthetic.x[first_block], after_block_0[first_block])
    assert not torch.equal(synthetic.x[~first_block], after_block_0[~first_block])  # block 1 was learned
    assert torch.equal(frozen[0][~first_block], frozen[3][~first_block])  # ...and waited during block 0
    moved, synthetic_b = _boost_images(0.5, monkeypatch)
    assert torch.equal(moved[3], frozen[3])  # block 0 is the same either way
    assert not torch.equal(synthetic_b.x[first_block], moved[3][first_block])


def test_distillation_beats_its_initialization_on_a_learnable_tiny_problem():
    evaluate = """
[[stage]]
do = "probe"
use = "distilled-eval"
name = "eval"
n_models = 3
epochs = 50
lr = 0.05
"""
    before = run(pipeline(meta_steps=1, lr=1e-9, extra_stages=evaluate))
    after = run(pipeline(meta_steps=40, lr=0.05, extra_stages=evaluate))
    acc = [r.metrics["probe/eval/acc_mean"] for r in (before, after)]
    assert acc[1] > acc[0] + 0.05, acc


@pytest.fixture
def one_thread():
    """The killed part runs with one thread; CPU float sums depend on the thread count, so the parts run
    in this process (the resume and the reference) use one thread too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("use,params,kill_at", [
    ("rat-bptt", dict(meta_steps=9, learn_labels=True, start="random"), 5),
    ("boost-dd", dict(blocks=[1, 1], meta_steps=4, beta=0.3), 7),   # killed inside block 1
])
def test_a_sigkilled_distillation_resumes_bit_identical(tmp_path, use, params, kill_at, one_thread):
    text = pipeline(use, **params)
    uri = fresh_store(tmp_path)
    run_id = run_until_killed(text, uri, host="ratbptt_testkit:host", key="distill/d/meta_loss", step=kill_at,
                              paths=[HERE])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    h = host()
    resumed = run_pipeline(parse_pipeline(text, h.registry), h, tracking_uri=uri, resume_run_id=run_id)
    reference = run(text)
    assert resumed.status == "FINISHED"
    assert torch.equal(resumed.state.synthetic.x, reference.state.synthetic.x)
    assert torch.equal(resumed.state.synthetic.y, reference.state.synthetic.y)
    history = client.get_metric_history(run_id, "distill/d/meta_loss")
    total = params["meta_steps"] * len(params.get("blocks", [1]))
    assert sorted(m.step for m in history) == list(range(1, total + 1))  # every meta-step logged once
