"""A damaged or tampered checkpoint: ``run --resume`` exits 2 with a clear message and unpickles nothing."""

from __future__ import annotations

import os
import pickle
import textwrap

import pytest
import toy_plugin

from deepscope.checkpoint import checkpoint_path
from deepscope.cli import main
from deepscope.plugins import set_host
from deepscope.testing import make_host

PIPELINE = textwrap.dedent("""
    [run]
    name = "tamper"
    seed = 0
    checkpoint_every = 1
    [data]
    use = "tiny"
    [model]
    use = "tiny-mlp"
    [[stage]]
    do = "train"
    use = "sgd"
    epochs = 1
    [[stage]]
    do = "probe"
    use = "raise"
    error = "interrupt"
""")


class Payload:
    """Unpickling this creates a folder: the proof that code in the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def killed_run(tmp_path, tmp_mlflow, capsys):
    """A run KILLED after its first stage, with a real checkpoint: (pipeline file, run id, checkpoint)."""
    set_host(make_host(toy_plugin))
    path = tmp_path / "p.toml"
    path.write_text(PIPELINE)
    assert main(["run", str(path)]) == 130
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tmp_mlflow)
    (run,) = client.search_runs([client.get_experiment_by_name("deepscope").experiment_id])
    checkpoint = checkpoint_path(tmp_mlflow, run.info.run_id)
    assert checkpoint.exists()
    capsys.readouterr()
    yield path, run.info.run_id, checkpoint
    set_host(None)


def resume(path, run_id, capsys):
    rc = main(["run", str(path), "--resume", run_id])
    return rc, capsys.readouterr().err


def test_an_intact_checkpoint_resumes(killed_run, capsys):
    path, run_id, _ = killed_run
    rc, err = resume(path, run_id, capsys)
    assert rc == 130 and f"run {run_id} is marked KILLED" in err  # loaded, resumed, and stopped again by the probe


def test_a_truncated_checkpoint_exits_2(killed_run, capsys):
    path, run_id, checkpoint = killed_run
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    rc, err = resume(path, run_id, capsys)
    text = " ".join(err.split())
    assert rc == 2
    assert f"cannot resume run {run_id}: its checkpoint {checkpoint} is unusable: it is truncated or corrupted" in text
    assert "Traceback" not in err and "weights_only" not in err


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_checkpoint_with_a_reduce_payload_is_refused_unrun(writer, killed_run, tmp_path, capsys):
    import torch

    path, run_id, checkpoint = killed_run
    marker = tmp_path / "payload-ran"
    payload = {"format": 2, "fingerprint": "x", "state": Payload(marker)}
    if writer == "torch.save":
        torch.save(payload, checkpoint)
    else:
        checkpoint.write_bytes(pickle.dumps(payload))
    rc, err = resume(path, run_id, capsys)
    text = " ".join(err.split())
    assert rc == 2 and not marker.exists()
    assert f"cannot resume run {run_id}: its checkpoint {checkpoint} is unusable" in text
    assert "Nothing in it was loaded or run" in text
    assert "Traceback" not in err and "weights_only" not in err and "pickle protocol" not in err
    if writer == "torch.save":  # a complete archive whose contents are refused
        assert "not written by deepscope or was tampered with" in text


def test_the_payload_does_run_when_unpickled_unrestricted(tmp_path):
    """The oracle for the test above: an ordinary unpickle of this payload leaves its marker."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.is_dir()
