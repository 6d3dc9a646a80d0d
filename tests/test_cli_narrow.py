"""`list` and `show` at 80 columns: text wraps, but no name or default is ever cut."""

from __future__ import annotations

import attrs
import pytest

from deepscope.cli import main
from deepscope.cli_support import results_console
from deepscope.plugins import get_host, set_host


@pytest.fixture
def narrow(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    set_host(None)  # every installed plugin
    yield get_host().registry
    set_host(None)


def default_text(field) -> str:
    if field.default is attrs.NOTHING:
        return "(required)"
    if isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
        return repr(field.default.factory())
    return repr(field.default)


def check_lines(out: str) -> None:
    assert "…" not in out, "something was cut with an ellipsis"
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80


def test_the_console_is_80_columns_wide(narrow):
    assert results_console().width == 80


def test_list_names_every_component_whole(narrow, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    check_lines(out)
    lines = [line for line in out.splitlines()]
    components = list(narrow.components())
    assert len(components) > 20  # the first-party plugins are installed: something real to check
    for c in components:
        assert any(f"│ {c.name} " in line for line in lines), c.name
        for alias in c.aliases:
            assert alias in out


def test_list_stages_names_every_stage_kind_whole(narrow, capsys):
    assert main(["list", "stages"]) == 0
    out = capsys.readouterr().out
    check_lines(out)
    for kind in narrow.stage_kinds.values():
        assert f"│ {kind.name}" in out and kind.component_kind in out


def test_show_prints_every_parameter_and_default_whole(narrow, capsys):
    shown = 0
    for c in narrow.components():
        if c.config_cls is None:
            continue
        assert main(["show", c.kind, c.name]) == 0
        out = capsys.readouterr().out
        assert "…" not in out
        lines = out.splitlines()
        attrs.resolve_types(c.config_cls)
        for f in attrs.fields(c.config_cls):
            if not f.init:
                continue
            name, default = f.alias or f.name, default_text(f)
            # name and default on one line, never folded
            assert any(line.startswith(f"{name}: ") and line.endswith(f" = {default}") for line in lines), \
                (c.kind, c.name, name, default)
            shown += 1
    assert shown > 100
