"""check_plugin over everything deepscope-ratbptt registers, config errors, and a cheap import."""

from __future__ import annotations

import subprocess
import sys

import pytest

import deepscope_ratbptt
from deepscope import ConfigError
from deepscope import parse_pipeline
from deepscope.testing import check_plugin

from ratbptt_testkit import host, pipeline


def test_every_component_resolves_and_builds_with_its_defaults():
    report = check_plugin(deepscope_ratbptt)
    assert {r.name for r in report} == {"rat-bptt", "boost-dd"}
    assert all(r.status.startswith("ok") or r.status.startswith("needs") for r in report), report


def test_importing_the_plugin_does_not_import_torch():
    code = "import sys, deepscope_ratbptt; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("params,key", [
    (dict(window=8, unroll=4), "window"),
    (dict(start="sometimes"), "start"),
    (dict(inner_optim="rmsprop"), "inner_optim"),
    (dict(inner_adam_eps="pytorch"), "inner_adam_eps"),
    (dict(clip_coef=1.0), "clip_coef"),
])
def test_bad_settings_are_config_errors_naming_the_key(params, key):
    with pytest.raises(ConfigError) as err:
        parse_pipeline(pipeline(**params), host().registry, file="distill.toml")
    assert key in str(err.value) and "distill.toml" in str(err.value)


def test_boost_blocks_must_be_positive_integers():
    with pytest.raises(ConfigError) as err:
        parse_pipeline(pipeline("boost-dd", blocks=[1, 0]), host().registry, file="boost.toml")
    assert "blocks" in str(err.value)
