"""deepscope.testing.check_plugin: every component a plugin registers resolves and builds from defaults."""

from __future__ import annotations

import sys
from pathlib import Path

import attrs
import pytest

from deepscope import AttackConfig, ConfigError, PrunerConfig, component_param, hookimpl, non_negative, param
from deepscope.testing import check_plugin, make_host

GOOD_FACTORY = "deepscope.testing:make_host"  # any importable callable will do for a smoke test


@attrs.define
class PlainConfig:
    """A probe config whose defaults are all valid."""

    every: int = param(1, doc="epochs between measurements", validator=non_negative)


@attrs.define
class BadDefaultConfig:
    """Its default breaks its own validator."""

    eps: float = param(-0.5, doc="perturbation radius", validator=non_negative)


@attrs.define
class CrossFieldConfig:
    """Its defaults pass each validator but not the cross-field check."""

    low: float = param(2.0)
    high: float = param(1.0)

    def __attrs_post_init__(self):
        if self.low > self.high:
            raise ValueError(f"'low' must not exceed 'high' (got low={self.low}, high={self.high})")


@attrs.define
class ConfigErrorConfig:
    """Its post-init raises deepscope's own ConfigError."""

    depth: int = param(0)

    def __attrs_post_init__(self):
        if self.depth < 1:
            raise ConfigError("depth must be at least 1", key="depth")


@attrs.define
class RequiredConfig:
    """Has required fields, so it cannot be built from defaults."""

    path: str = param(doc="where the data is")
    split: str = param(doc="which split")
    seed: int = param(0)


@attrs.define
class UsesPgdConfig:
    """A default naming a component of another plugin."""

    attack: object = component_param("attack", default={"use": "toy-pgd"})


@attrs.define(kw_only=True)
class ToyPrunerConfig(PrunerConfig):
    """A pruner: compression and sparsity both default to None."""

    rounds: int = param(1, validator=non_negative)


@attrs.define(kw_only=True)
class BrokenPrunerConfig(PrunerConfig):
    rounds: int = param(-1, validator=non_negative)


class Good:
    @hookimpl
    def deepscope_register_probes(self, register):
        register("plain", GOOD_FACTORY, PlainConfig)
        register("no-config", GOOD_FACTORY)
        register("needs-path", GOOD_FACTORY, RequiredConfig)

    @hookimpl
    def deepscope_register_pruners(self, register):
        register("toy-pruner", GOOD_FACTORY, ToyPrunerConfig)

    @hookimpl
    def deepscope_register_prune_targets(self, register):
        register("toy-target", GOOD_FACTORY)

    @hookimpl
    def deepscope_register_executors(self, register):
        register("toy-executor", make_host, PlainConfig)  # a callable, not a string


class Misspelled:
    @hookimpl
    def deepscope_register_probes(self, register):
        register("plain", GOOD_FACTORY, PlainConfig)
        register("typo-attr", "deepscope.testing:mkae_host", PlainConfig)

    @hookimpl
    def deepscope_register_models(self, register):
        register("typo-module", "deepscope.tesitng:make_host")
        register("no-colon", "deepscope.testing.make_host")


class NotCallable:
    @hookimpl
    def deepscope_register_attacks(self, register):
        register("constant", "deepscope.cache:KEY_LENGTH", AttackConfig)


class BadDefaults:
    @hookimpl
    def deepscope_register_trainers(self, register):
        register("bad-default", GOOD_FACTORY, BadDefaultConfig)
        register("cross-field", GOOD_FACTORY, CrossFieldConfig)
        register("config-error", GOOD_FACTORY, ConfigErrorConfig)
        register("fine", GOOD_FACTORY, PlainConfig)

    @hookimpl
    def deepscope_register_pruners(self, register):
        register("broken-pruner", GOOD_FACTORY, BrokenPrunerConfig)


class NeedsPgd:
    @hookimpl
    def deepscope_register_trainers(self, register):
        register("uses-pgd", GOOD_FACTORY, UsesPgdConfig)


class ProvidesPgd:
    @hookimpl
    def deepscope_register_attacks(self, register):
        register("toy-pgd", GOOD_FACTORY, AttackConfig)


class RaisesInHook:
    @hookimpl
    def deepscope_register_probes(self, register):
        raise RuntimeError("forgot to install scipy")


def failure_lines(excinfo) -> list[str]:
    return str(excinfo.value).splitlines()[1:]


def test_a_good_plugin_passes_with_a_report_of_every_kind():
    report = check_plugin(Good())
    assert sorted(report) == sorted([
        ("probe", "plain", "ok"), ("probe", "no-config", "ok"), ("probe", "needs-path", "needs path, split"),
        ("pruner", "toy-pruner", "ok with sparsity=0.5"), ("prune-target", "toy-target", "ok"),
        ("executor", "toy-executor", "ok")])
    assert all(r.kind and r.name and r.status for r in report)


def test_only_the_plugins_own_components_are_reported():
    names = {r.name for r in check_plugin(Good())}
    assert "direct" not in names and "inline" not in names  # the core's builtins are not the plugin's


def test_misspelled_factories_fail_naming_plugin_kind_component_and_string():
    with pytest.raises(AssertionError) as excinfo:
        check_plugin(Misspelled())
    lines = failure_lines(excinfo)
    assert str(excinfo.value).startswith("check_plugin found 3 problem(s)")
    assert len(lines) == 3 and not any("'plain'" in line for line in lines)
    by_name = {name: next(line for line in lines if f"'{name}'" in line)
               for name in ("typo-attr", "typo-module", "no-colon")}
    assert all(line.startswith("plugin Misspelled-0: ") for line in lines)
    assert "probe 'typo-attr'" in by_name["typo-attr"] and "'deepscope.testing:mkae_host'" in by_name["typo-attr"]
    assert "AttributeError" in by_name["typo-attr"]
    assert "model 'typo-module'" in by_name["typo-module"]
    assert "'deepscope.tesitng:make_host'" in by_name["typo-module"] and "ModuleNotFoundError" in by_name["typo-module"]
    assert "not of the form 'module:attr'" in by_name["no-colon"]


def test_a_factory_that_is_not_callable_fails():
    with pytest.raises(AssertionError, match=r"attack 'constant': factory 'deepscope.cache:KEY_LENGTH' resolves "
                                             r"to a int, which is not callable"):
        check_plugin(NotCallable())


def test_defaults_that_break_validators_fail_all_at_once():
    with pytest.raises(AssertionError) as excinfo:
        check_plugin(BadDefaults())
    lines = failure_lines(excinfo)
    assert len(lines) == 4 and not any("'fine'" in line for line in lines)
    text = "\n".join(lines)
    assert "trainer 'bad-default': its config class BadDefaultConfig does not build" in text
    assert "trainer.bad-default" in text and "-0.5" in text
    assert "trainer 'cross-field'" in text and "'low' must not exceed 'high'" in text
    assert "trainer 'config-error'" in text and "depth must be at least 1" in text
    assert "pruner 'broken-pruner'" in text and "-1" in text


def test_component_defaults_are_checked_against_the_host():
    with pytest.raises(AssertionError, match=r"trainer 'uses-pgd'.*unknown attack 'toy-pgd'"):
        check_plugin(NeedsPgd())
    assert check_plugin(NeedsPgd(), host=make_host(ProvidesPgd())) == [("trainer", "uses-pgd", "ok")]


def test_a_plugin_already_in_the_given_host_is_not_registered_twice():
    plugin = Good()
    host = make_host(plugin)
    assert len(check_plugin(plugin, host=host)) == 6


def test_a_registration_hook_that_raises_fails_with_the_plugin_name():
    with pytest.raises(AssertionError, match=r"plugin RaisesInHook-0: registering its components failed: "
                                             r"RuntimeError: forgot to install scipy"):
        check_plugin(RaisesInHook())


@pytest.fixture
def example_plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples" / "third-party-plugin"))
    import deepscope_example

    yield deepscope_example
    for module in [m for m in sys.modules if m == "deepscope_example" or m.startswith("deepscope_example.")]:
        del sys.modules[module]


def test_the_third_party_example_passes(example_plugin):
    assert sorted(check_plugin(example_plugin)) == [("probe", "zero-fraction", "ok"),
                                                    ("pruner", "layerwise-magnitude", "ok with sparsity=0.5")]
