"""The attack-gap probe: its numbers are the attack stages' own logged numbers, and validate rejects unfair
comparisons (a label no earlier attack stage has, mixed n_examples or eps, a train stage in between)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

import deepscope_standard
from deepscope import ConfigError, parse_pipeline, run_pipeline
from deepscope.testing import make_host, run_toml
from deepscope_standard.attack_gap_config import select_attacks

HEAD = """
[run]
name = "gap"
seed = 0
{run_extra}
[data]
use = "fashion-mnist-sample"
subset = 300
[model]
use = "mlp"
widths = [16]
"""
TRAIN = '[[stage]]\ndo = "train"\nuse = "standard"\noptimizer = "adam"\nlr = 0.01\nepochs = 1\n'
PGD = '[[stage]]\ndo = "attack"\nuse = "pgd"\neps = 0.1\nsteps = 3\nn_examples = 60\n'
FGSM = '[[stage]]\ndo = "attack"\nuse = "fgsm"\neps = 0.1\nn_examples = 60\n'
SQUARE = '[[stage]]\ndo = "attack"\nuse = "square"\neps = 0.1\nqueries = 20\nn_examples = 60\n'
GAP = '[[stage]]\ndo = "probe"\nuse = "attack-gap"\n'


def pipeline(*stages: str, run_extra: str = "") -> str:
    return HEAD.format(run_extra=run_extra) + TRAIN + "".join(stages)


def host():
    return make_host(deepscope_standard)


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_pipeline(text, host().registry, file="p.toml")
    return str(info.value).splitlines()


def test_the_gap_is_the_reference_minus_the_worst_logged_alternative(tmp_mlflow, tmp_path):
    result = run_toml(pipeline(PGD, FGSM, SQUARE, GAP), host(), tracking_uri=tmp_mlflow)
    m = result.metrics
    pgd, fgsm, square = (m[f"attack/{a}/robust_acc"] for a in ("pgd", "fgsm", "square"))
    assert m["probe/attack-gap/reference_robust_acc"] == pgd
    assert m["probe/attack-gap/worst_alternative_robust_acc"] == min(fgsm, square)
    assert m["probe/attack-gap/gap"] == pytest.approx(pgd - min(fgsm, square), abs=1e-12)
    assert m["probe/attack-gap/n_alternatives"] == 2  # the default: every other attack stage
    path = MlflowClient(tracking_uri=tmp_mlflow).download_artifacts(result.run_id, "probe/attack-gap/attack_gap.json",
                                                                    str(tmp_path))
    rows = json.loads(open(path).read())
    assert [(r["attack"], r["stage"], r["role"]) for r in rows] == [
        ("pgd", 1, "reference"), ("fgsm", 2, "alternative"), ("square", 3, "alternative")]
    assert [r["robust_acc"] for r in rows] == [pgd, fgsm, square]
    worst = [r["attack"] for r in rows if r["worst"]]
    assert len(worst) == 1 and m[f"attack/{worst[0]}/robust_acc"] == min(fgsm, square)


def test_named_stages_an_explicit_reference_and_alternatives_and_the_worst_metric():
    """Labels are stage names; alternatives limit the comparison; with draws the worst-over-draws metric."""
    draws = "draws = 2\n"
    text = pipeline(PGD + draws, FGSM.replace('use = "fgsm"', 'use = "fgsm"\nname = "one-step"') + draws,
                    SQUARE + draws, GAP + 'reference = "one-step"\nalternatives = ["pgd"]\nmetric = "robust_acc_worst"\n')
    m = run_toml(text, host(), track=False).metrics
    assert m["probe/attack-gap/n_alternatives"] == 1
    assert m["probe/attack-gap/reference_robust_acc"] == m["attack/one-step/robust_acc_worst"]
    assert m["probe/attack-gap/gap"] == pytest.approx(m["attack/one-step/robust_acc_worst"]
                                                      - m["attack/pgd/robust_acc_worst"], abs=1e-12)


def test_attacks_before_a_later_train_stage_are_not_the_default_alternatives():
    """Only the attacks on the current model are compared; a label repeated after training means its latest stage."""
    text = pipeline(SQUARE, TRAIN, PGD, FGSM, GAP)
    stages = parse_pipeline(text, host().registry).stages
    reference, alternatives = select_attacks(stages[-1].config, stages[:-1])
    assert reference.index == 3 and [s.index for s in alternatives] == [4]  # square (stage 1) predates training


UNFAIR = [
    ((PGD.replace('use = "pgd"', 'use = "pgd"\nname = "pgd-10"'), SQUARE, GAP + 'reference = "pgd-1"\n'),
     "$.stage[3].reference: no attack stage before this one is labelled 'pgd-1' (did you mean 'pgd-10'?); the "
     "earlier attack stages are: 'pgd-10', 'square'. Give the label (name, or `use`) of an earlier do = \"attack\" "
     "stage"),
    ((PGD, SQUARE, GAP + 'alternatives = ["sqare"]\n'),
     "$.stage[3].alternatives: no attack stage before this one is labelled 'sqare' (did you mean 'square'?)"),
    ((PGD, GAP), "$.stage[2].alternatives: no attack stage other than 'pgd' (stage 1) runs on the same model"),
    ((PGD, SQUARE.replace("n_examples = 60", "n_examples = 30"), GAP),
     "$.stage[3].alternatives: attack stage 2 ('square') attacks n_examples = 30 but the reference, stage 1 "
     "('pgd'), attacks 60; the gap compares like with like: give every compared attack stage the same n_examples"),
    ((PGD, SQUARE.replace("eps = 0.1", "eps = 0.2"), GAP),
     "$.stage[3].alternatives: attack stage 2 ('square') attacks in norm = 'linf', eps = 0.2 but the reference, "
     "stage 1 ('pgd'), in norm = 'linf', eps = 0.1: give every compared attack stage the same eps and norm, or "
     "set allow_mixed_eps = true"),
    ((PGD, SQUARE, TRAIN, GAP + 'alternatives = ["square"]\n'),
     "$.stage[4].reference: stage 3 (do = \"train\") changes the model after attack stage 1 ('pgd'), so that "
     "attack measured another model: move this probe before stage 3, or repeat the attack after it"),
    ((PGD, SQUARE, GAP + 'metric = "robust_acc_worst"\n'),
     "$.stage[3].metric: metric = \"robust_acc_worst\" is logged only with draws > 1"),
    ((PGD, SQUARE, GAP + 'alternatives = ["square", "pgd"]\n'),
     "$.stage[3].alternatives: 'pgd' is the reference; it cannot be an alternative too"),
]


@pytest.mark.parametrize("stages, expected", UNFAIR)
def test_each_unfair_comparison_is_a_config_error_at_its_key(stages, expected):
    lines = errors(pipeline(*stages))
    assert len(lines) == 1 and lines[0].startswith(f"p.toml: {expected}"), lines


def test_deepscope_validate_exits_2_on_each_of_them(tmp_path):
    """The command line, as a user runs it (installed plugins loaded from their entry points), once per file."""
    paths = []
    for i, (stages, _) in enumerate(UNFAIR):
        paths.append(str(tmp_path / f"p{i}.toml"))
        (tmp_path / f"p{i}.toml").write_text(pipeline(*stages))
    code = ("import sys\nfrom deepscope.cli import main\n"
            "for path in sys.argv[1:]:\n    print('rc', main(['validate', path]), flush=True)\n")
    out = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["rc", "2"] * len(paths), out.stderr
    err = " ".join(out.stderr.split())
    for path, (_, expected) in zip(paths, UNFAIR):
        assert f"{path}: {expected}" in err
    assert "Traceback" not in err


def test_a_label_may_be_the_use_of_a_named_stage_unless_several_share_it():
    named = PGD.replace('use = "pgd"', 'use = "pgd"\nname = "pgd-10"')
    stages = parse_pipeline(pipeline(named, SQUARE, GAP), host().registry).stages
    assert select_attacks(stages[-1].config, stages[:-1])[0].label == "pgd-10"
    twice = named + named.replace("pgd-10", "pgd-20")
    assert errors(pipeline(twice, SQUARE, GAP)) == [
        "p.toml: $.stage[4].reference: 'pgd' is the `use` of several attack stages ('pgd-10', 'pgd-20'); write "
        "the stage's name instead"]


def test_mixed_eps_is_allowed_when_asked():
    text = pipeline(PGD, SQUARE.replace("eps = 0.1", "eps = 0.2"), GAP + "allow_mixed_eps = true\n")
    assert parse_pipeline(text, host().registry).stages[-1].config.allow_mixed_eps is True


def test_a_resumed_run_reads_the_attack_metrics_back_from_the_checkpoint(tmp_mlflow, monkeypatch):
    """The probe fails once; the resumed run skips the finished attack stages (PGD would raise) and still
    measures the gap from the restored state.latest."""
    from deepscope import RunFailed
    from deepscope_standard import attack_gap, attacks

    text = pipeline(PGD, SQUARE, GAP, run_extra="checkpoint_every = 1")
    real_measure = attack_gap.AttackGap.measure

    def fail(self, state, ctx):
        raise RuntimeError("killed before the probe")

    monkeypatch.setattr(attack_gap.AttackGap, "measure", fail)
    h = host()
    with pytest.raises(RunFailed, match="killed before the probe"):
        run_pipeline(parse_pipeline(text, h.registry), h, tracking_uri=tmp_mlflow)
    client = MlflowClient(tracking_uri=tmp_mlflow)
    (failed,) = client.search_runs([client.get_experiment_by_name("deepscope").experiment_id])
    run_id = failed.info.run_id
    monkeypatch.setattr(attack_gap.AttackGap, "measure", real_measure)

    def no_rerun(*args, **kwargs):
        raise AssertionError("a finished attack stage ran again")

    monkeypatch.setattr(attacks.PGD, "perturb", no_rerun)
    h = host()
    resumed = run_pipeline(parse_pipeline(text, h.registry), h, tracking_uri=tmp_mlflow, resume_run_id=run_id)
    logged = client.get_run(run_id).data.metrics
    assert resumed.status == "FINISHED"
    assert resumed.metrics["probe/attack-gap/gap"] == pytest.approx(
        logged["attack/pgd/robust_acc"] - logged["attack/square/robust_acc"], abs=1e-12)


def test_as_a_periodic_probe_of_a_train_stage_it_is_rejected_at_its_own_key():
    text = pipeline(PGD, SQUARE, TRAIN + 'probes = [{ use = "attack-gap", alternatives = ["square"] }]\n')
    assert errors(text)[0].startswith(
        "p.toml: $.stage[3].probes[0].reference: stage 3 (do = \"train\") changes the model after attack stage 1")
