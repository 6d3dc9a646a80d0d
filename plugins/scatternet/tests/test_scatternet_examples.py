"""Every example pipeline under examples/scatternet parses against the registry (all keys known)."""

from __future__ import annotations

from pathlib import Path

import pytest

import deepscope_scatternet
from deepscope import load_pipeline
from deepscope.testing import make_host

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples" / "scatternet").glob("*.toml"))


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"fmnist_scatternet_noise.toml", "fmnist_scatternet_nonoise.toml", "fmnist_vonenet.toml",
            "fmnist_plain_cnn.toml", "cifar10_scatternet_noise.toml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses(path):
    import deepscope_standard

    host = make_host(deepscope_standard, deepscope_scatternet)
    pipeline = load_pipeline(path, host.registry)
    assert pipeline.model.name in {"scatternet", "vonenet", "frontend-cnn"}
    assert any(stage.do == "attack" for stage in pipeline.stages)
