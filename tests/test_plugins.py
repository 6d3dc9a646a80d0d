"""Plugin loading through entry points, and the registry's collision and lookup rules."""

from __future__ import annotations

import types

import pytest
import toy_plugin

import deepscope.plugins as plugins_mod
from deepscope import AttackConfig, PrunerConfig, hookimpl
from deepscope.config import parse_pipeline
from deepscope.errors import ConfigError, DuplicateComponentError, PluginLoadError, UnknownComponentError
from deepscope.plugins import PluginHost
from deepscope.testing import make_host


class FakeDist:
    def __init__(self, name, version):
        self.name, self.version = name, version


class FakeEntryPoint:
    def __init__(self, dist, version, target):
        self.name = dist
        self.value = f"{dist.replace('-', '_')}"
        self.dist = FakeDist(dist, version)
        self._target = target

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


#: pruner and attack configs must subclass the core's bases (the stage reads them)
_BASES = {"deepscope_register_pruners": PrunerConfig, "deepscope_register_attacks": AttackConfig}


def plugin_registering(kind_hook: str, *names: str):
    module = types.ModuleType(f"plugin_{'_'.join(names)}")

    def hook(register):
        for name in names:
            register(name, lambda cfg: None, _BASES.get(kind_hook))

    hook.__name__ = kind_hook
    setattr(module, kind_hook, hookimpl(hook))
    return module


@pytest.fixture
def fake_entry_points(monkeypatch):
    eps: list[FakeEntryPoint] = []
    monkeypatch.setattr(plugins_mod.md, "entry_points", lambda group: list(eps) if group == "deepscope" else [])
    return eps


def test_broken_plugin_is_recorded_and_others_still_load(fake_entry_points):
    fake_entry_points.append(FakeEntryPoint("ds-broken", "1.2", ImportError("No module named 'scipy.nope'")))
    fake_entry_points.append(FakeEntryPoint("ds-good", "0.3", plugin_registering("deepscope_register_probes", "p1")))
    with pytest.warns(UserWarning, match="ds-broken 1.2 failed to import"):
        host = PluginHost(strict=False, disabled=())
    assert host.load_errors == {"ds-broken": ("1.2", "ImportError: No module named 'scipy.nope'")}
    assert host.registry.get("probe", "p1").plugin == "ds-good"
    assert host.registry.get("probe", "p1").version == "0.3"


def test_strict_loading_makes_a_broken_plugin_fatal(fake_entry_points):
    fake_entry_points.append(FakeEntryPoint("ds-broken", "1.2", RuntimeError("boom")))
    with pytest.raises(PluginLoadError, match="plugin ds-broken 1.2 .* failed to import: RuntimeError: boom"):
        PluginHost(strict=True, disabled=())


def test_strict_from_environment(fake_entry_points, monkeypatch):
    fake_entry_points.append(FakeEntryPoint("ds-broken", "1.2", RuntimeError("boom")))
    monkeypatch.setenv("DEEPSCOPE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError):
        PluginHost(disabled=())


def test_disabled_plugins_are_not_imported(fake_entry_points, monkeypatch):
    fake_entry_points.append(FakeEntryPoint("ds-broken", "1.2", RuntimeError("must not be loaded")))
    fake_entry_points.append(FakeEntryPoint("ds-good", "0.3", plugin_registering("deepscope_register_probes", "p1")))
    monkeypatch.setenv("DEEPSCOPE_DISABLE_PLUGINS", "ds-broken, other")
    host = PluginHost(strict=True)
    assert "ds-broken" not in host.info and host.load_errors == {}
    assert host.registry.names("probe") == ["p1"]


def test_pipeline_needing_a_failed_plugin_reports_its_import_error(fake_entry_points):
    fake_entry_points.append(FakeEntryPoint("ds-pruners", "2.0", ImportError("cannot import name 'foo'")))
    with pytest.warns(UserWarning):
        host = PluginHost(strict=False, disabled=())
    host.register(toy_plugin, name="toy")
    text = '[run]\nname="x"\nseed=0\n[data]\nuse="tiny"\n[model]\nuse="tiny-mlp"\n' \
           '[[stage]]\ndo="prune"\nuse="synflow"\ncompression=10\n'
    with pytest.raises(ConfigError) as info:
        parse_pipeline(text, host.registry, file="p.toml")
    message = str(info.value)
    assert "unknown pruner 'synflow'" in message
    assert "ds-pruners 2.0 (ImportError: cannot import name 'foo')" in message


def test_duplicate_names_raise_naming_both_plugins():
    a = plugin_registering("deepscope_register_pruners", "magnitude")
    b = plugin_registering("deepscope_register_pruners", "magnitude")
    host = make_host()
    host.register(a, name="ds-a", version="0.3")
    host.register(b, name="ds-b", version="1.1")
    with pytest.raises(DuplicateComponentError) as info:
        host.registry
    text = str(info.value)
    assert "pruner 'magnitude' is registered twice" in text
    assert "ds-a 0.3" in text and "ds-b 1.1" in text
    assert "'ds-a:magnitude'" in text and "'ds-b:magnitude'" in text


def test_without_strict_a_clash_is_deferred_and_qualified_names_pick_one():
    host = make_host(strict=False)
    host.register(plugin_registering("deepscope_register_pruners", "magnitude"), name="ds-a", version="0.3")
    host.register(plugin_registering("deepscope_register_pruners", "magnitude"), name="ds-b", version="1.1")
    registry = host.registry
    assert len(registry.duplicates) == 1 and "ds-a 0.3 and by ds-b 1.1" in registry.duplicates[0]
    assert registry.get("pruner", "ds-b:magnitude").plugin == "ds-b"
    assert registry.get("pruner", "ds-a:magnitude").plugin == "ds-a"
    with pytest.raises(DuplicateComponentError, match="pruner 'magnitude' is registered twice"):
        registry.get("pruner", "magnitude")
    text = '[run]\nname="x"\nseed=0\n[data]\nuse="d"\n[model]\nuse="m"\n[[stage]]\ndo="prune"\n' \
           'use="magnitude"\ncompression=10\n'
    with pytest.raises(ConfigError) as info:
        parse_pipeline(text, registry, file="p.toml")
    assert "p.toml: $.stage[0].use: pruner 'magnitude' is registered twice: by ds-a 0.3 and by ds-b 1.1" \
        in str(info.value)


def test_qualified_names_pick_a_plugin():
    host = make_host()
    host.register(plugin_registering("deepscope_register_probes", "alpha"), name="ds-a")
    registry = host.registry
    assert registry.get("probe", "ds-a:alpha").name == "alpha"
    with pytest.raises(UnknownComponentError):
        registry.get("probe", "ds-b:alpha")


def test_unknown_name_suggests_close_matches_and_lists_installed():
    host = make_host(toy_plugin)
    with pytest.raises(UnknownComponentError) as info:
        host.registry.get("attack", "shfit")
    text = str(info.value)
    assert "unknown attack 'shfit'. Did you mean 'shift'?" in text
    assert "Installed attacks: shift." in text


def test_aliases_resolve_and_collide():
    module = types.ModuleType("aliased")

    @hookimpl
    def deepscope_register_models(register):
        register("lenet-300-100", lambda cfg, info: None, aliases=("lenet300",))

    module.deepscope_register_models = deepscope_register_models
    host = make_host(module)
    assert host.registry.get("model", "lenet300").name == "lenet-300-100"
    host.register(plugin_registering("deepscope_register_models", "lenet300"), name="other")
    with pytest.raises(DuplicateComponentError, match="model 'lenet300' is registered twice"):
        host.registry


def test_register_rejects_bad_names_and_configs():
    bad = types.ModuleType("bad")

    @hookimpl
    def deepscope_register_probes(register):
        register("a:b", lambda cfg: None)

    bad.deepscope_register_probes = deepscope_register_probes
    with pytest.raises(ValueError, match="without ':'"):
        make_host(bad).registry


def test_lifecycle_hooks_observe_a_run(tmp_mlflow):
    from deepscope.testing import run_toml

    events = []

    class Observer:
        @hookimpl
        def deepscope_run_started(self, run):
            events.append(("run_started", run.pipeline.run.name))

        @hookimpl
        def deepscope_stage_started(self, stage):
            events.append(("stage_started", stage.key))

        @hookimpl
        def deepscope_stage_finished(self, stage, metrics):
            events.append(("stage_finished", stage.key, sorted(metrics)))

        @hookimpl
        def deepscope_metrics_logged(self, metrics, step):
            events.append(("metrics", step, sorted(metrics)))

        @hookimpl
        def deepscope_run_finished(self, status):
            events.append(("run_finished", status))

    host = make_host(toy_plugin, Observer())
    run_toml("""
        [run]
        name = "observed"
        seed = 0
        [data]
        use = "tiny"
        [model]
        use = "tiny-mlp"
        [[stage]]
        do = "probe"
        use = "count"
        """, host)
    assert events == [
        ("run_started", "observed"),
        ("stage_started", "probe/count"),
        ("metrics", 0, ["probe/count/epoch", "probe/count/params"]),
        ("stage_finished", "probe/count", ["probe/count/epoch", "probe/count/params"]),
        ("run_finished", "FINISHED"),
    ]


def test_a_misspelled_hook_is_a_load_error(fake_entry_points):
    typo = plugin_registering("deepscope_register_probe", "p1")  # singular: not a deepscope hook
    with pytest.raises(PluginLoadError, match="implements unknown hooks deepscope_register_probe"):
        make_host().register(typo, name="ds-typo")
    fake_entry_points.append(FakeEntryPoint("ds-typo", "0.1", typo))
    with pytest.warns(UserWarning, match="ds-typo 0.1 failed to import"):
        host = PluginHost(strict=False, disabled=())
    assert "unknown hooks deepscope_register_probe" in host.load_errors["ds-typo"][1]
    assert "ds-typo" not in host.info


def test_a_clash_on_an_alias_is_reported_and_qualified_names_reach_both():
    module = types.ModuleType("aliased")

    @hookimpl
    def deepscope_register_models(register):
        register("x", lambda cfg, info: None, aliases=("y",))

    module.deepscope_register_models = deepscope_register_models
    host = make_host(strict=False)
    host.register(module, name="ds-a")
    host.register(plugin_registering("deepscope_register_models", "y"), name="ds-b")
    registry = host.registry
    with pytest.raises(DuplicateComponentError, match="model 'y' is registered twice"):
        registry.find("model", "y")
    assert registry.find("model", "ds-b:y").plugin == "ds-b"
    assert registry.find("model", "x").plugin == "ds-a"


def test_every_entry_point_of_a_distribution_loads_and_duplicates_are_skipped(fake_entry_points):
    first = FakeEntryPoint("ds-multi", "1.0", plugin_registering("deepscope_register_probes", "p1"))
    second = FakeEntryPoint("ds-multi", "1.0", plugin_registering("deepscope_register_attacks", "a1"))
    second.name = "extra-attacks"
    listed_twice = FakeEntryPoint("ds-multi", "1.0", RuntimeError("must not be loaded again"))
    fake_entry_points.extend([first, second, listed_twice])
    host = PluginHost(strict=True, disabled=())
    assert host.registry.get("probe", "p1").plugin == "ds-multi"
    assert host.registry.get("attack", "a1").plugin == "ds-multi/extra-attacks"
