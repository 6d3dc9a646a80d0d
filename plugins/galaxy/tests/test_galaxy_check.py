"""check_plugin over everything deepscope-galaxy registers, config errors naming their key, a cheap import."""

from __future__ import annotations

import subprocess
import sys

import pytest

import deepscope_galaxy
from deepscope import ConfigError, parse_pipeline
from deepscope.testing import check_plugin

from galaxy_testkit import host, pipeline


def test_every_component_resolves_and_builds_with_its_defaults():
    report = check_plugin(deepscope_galaxy)
    assert {r.name for r in report} >= {"mtt", "stm"}
    assert all(r.status.startswith("ok") or r.status.startswith("needs") for r in report), report


def test_importing_the_plugin_does_not_import_torch():
    code = "import sys, deepscope_galaxy; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("use,params,key", [
    ("mtt", dict(max_start_epoch=4, expert_epochs=2), "max_start_epoch"),
    ("mtt", dict(pix_init="zeros"), "pix_init"),
    ("mtt", dict(dsa_strategy="color_blur"), "dsa_strategy"),
    ("stm", dict(max_start_epoch=4), "max_start_epoch"),
    ("stm", dict(init_epoch=5, max_start_epoch=3), "init_epoch"),
    ("stm", dict(lr_mode="independent-lr"), "lr_mode"),
    ("stm", dict(finetune_decay=1.0), "finetune_decay"),
])
def test_bad_settings_are_config_errors_naming_the_key(use, params, key):
    with pytest.raises(ConfigError) as err:
        parse_pipeline(pipeline(use, **params), host().registry, file="distill.toml")
    assert key in str(err.value) and "distill.toml" in str(err.value)


@pytest.mark.parametrize("experts,words", [
    ("{ num = 2, epoch = 4 }", ["experts", "epoch"]),
    ("{ num = \"2\" }", ["experts", "num"]),
    ("{ num = 0 }", ["experts", "num"]),
])
def test_bad_expert_tables_are_config_errors(experts, words):
    with pytest.raises(ConfigError) as err:
        parse_pipeline(pipeline(experts=experts), host().registry, file="distill.toml")
    assert all(w in str(err.value) for w in words), str(err.value)
