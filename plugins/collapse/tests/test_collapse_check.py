"""check_plugin over everything deepscope-collapse registers, against its entry in registry.toml."""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import deepscope_collapse
from deepscope.testing import check_plugin

ENTRY = tomllib.loads((Path(__file__).resolve().parents[3] / "registry.toml").read_text())["collapse"]


def test_check_plugin_covers_every_listed_component():
    report = check_plugin(deepscope_collapse)
    listed = {(kind, name) for kind, names in ENTRY["components"].items() for name in names}
    assert listed, "registry.toml lists no components for collapse"
    assert {(r.kind, r.name) for r in report} == listed
