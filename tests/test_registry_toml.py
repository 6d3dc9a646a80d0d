"""registry.toml must say exactly what the installed first-party plugins register."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli

from deepscope.plugins import PluginHost

ROOT = Path(__file__).resolve().parents[1]
INDEX = tomli.loads((ROOT / "registry.toml").read_text())


@pytest.fixture(scope="module")
def host():
    return PluginHost(strict=True, disabled=())


def test_every_plugin_directory_is_indexed():
    on_disk = {p.parent.name for p in (ROOT / "plugins").glob("*/pyproject.toml")}
    assert on_disk == set(INDEX)


@pytest.mark.parametrize("name", sorted(INDEX))
def test_entry_matches_the_installed_plugin(name, host):
    entry = INDEX[name]
    pyproject = tomli.loads((ROOT / entry["path"] / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == entry["distribution"]
    assert entry["distribution"] in pyproject["project"]["entry-points"]["deepscope"]
    assert set(entry["paper"]) >= {"arxiv", "title"}
    registered: dict[str, list[str]] = {}
    for comp in host.registry.components():
        if comp.plugin == entry["distribution"]:
            registered.setdefault(comp.kind, []).append(comp.name)
    listed = {kind: sorted(names) for kind, names in entry["components"].items() if names}
    assert {k: sorted(v) for k, v in registered.items()} == listed
