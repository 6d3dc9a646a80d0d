"""Shared fixtures: a host with the standard and impressions plugins, and tiny task sequences."""

from __future__ import annotations

import deepscope_standard
import pytest

import deepscope_impressions
from deepscope.config import structure_component
from deepscope.testing import make_host


@pytest.fixture(scope="session")
def host():
    return make_host(deepscope_standard, deepscope_impressions)


@pytest.fixture(scope="session")
def build_data(host):
    def build(table: dict):
        spec, issues = structure_component(host.registry, "dataset", table, "$.data")
        assert not issues, issues
        return spec.build()

    return build


BASE = {"use": "fashion-mnist-sample", "subset": 60, "test_subset": 30}
