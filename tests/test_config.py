"""Pipeline parsing: every malformed input is reported with file and key path."""

from __future__ import annotations

import textwrap

import pytest
import toy_plugin

from deepscope.config import dump_toml, parse_pipeline, read_toml
from deepscope.errors import ConfigError
from deepscope.testing import make_host

GOOD = """
[run]
name = "t"
seed = 1

[data]
use = "tiny"

[model]
use = "tiny-mlp"
hidden = 4

[[stage]]
do = "prune"
use = "mag"
compression = 10

[[stage]]
do = "train"
use = "sgd"
epochs = 2
lr = 1
probes = [{ use = "count", every = 2 }]

[[stage]]
do = "attack"
use = "shift"
name = "shift-small"
eps = 0.05
"""


@pytest.fixture(scope="module")
def registry():
    return make_host(toy_plugin).registry


def errors_of(text: str, registry) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_pipeline(textwrap.dedent(text), registry, file="p.toml")
    return str(info.value).splitlines()


def test_good_pipeline_is_structured(registry):
    p = parse_pipeline(GOOD, registry, file="p.toml")
    assert p.run.seed == 1 and p.run.device == "auto"
    assert p.model.config.hidden == 4
    assert [s.do for s in p.stages] == ["prune", "train", "attack"]
    assert p.stages[0].config.density == pytest.approx(0.1)
    assert isinstance(p.stages[1].config.lr, float) and p.stages[1].config.lr == 1.0  # int accepted for float
    assert p.stages[1].probes[0].every == 2 and p.stages[1].probes[0].spec.name == "count"
    assert p.stages[2].key == "attack/shift-small"
    assert p.stages[2].config.n_examples is None  # AttackConfig default


def test_resolved_config_fills_defaults_and_round_trips(registry):
    p = parse_pipeline(GOOD, registry, file="p.toml")
    resolved = p.resolved()
    assert resolved["stage"][1]["probes"] == [{"every": 2, "use": "count", "scale": 1.0}]
    assert resolved["data"] == {"use": "tiny", "n_train": 64, "classes": 3}
    again = parse_pipeline(dump_toml(resolved), registry)
    assert again.resolved() == resolved
    flat = p.flat_params()
    assert flat["stage.0.compression"] == "10.0" and flat["run.seed"] == "1"


def test_syntax_error_gives_line_and_column(registry):
    lines = errors_of('[run]\nname = "x"\nseed = = 3\n', registry)
    assert lines[0].startswith("p.toml:3:")
    assert "TOML syntax error" in lines[0]


def test_every_problem_is_reported_together_with_its_path(registry):
    lines = errors_of("""
        [run]
        name = "t"

        [data]
        use = "tiny"
        n_train = "many"

        [model]
        use = "tiny-mpl"

        [[stage]]
        do = "prune"
        use = "mag"
        compression = 10
        sparsity = 0.5

        [[stage]]
        do = "train"
        use = "sgd"
        epochz = 3
        lr = -1.0
        """, registry)
    text = "\n".join(lines)
    assert "p.toml: $.run.seed: required key missing" in text
    assert "p.toml: $.data.n_train: expected an integer, got str 'many'" in text
    assert "p.toml: $.model.use: unknown model 'tiny-mpl'. Did you mean 'tiny-mlp'?" in text
    assert "p.toml: $.stage[0]: give exactly one of 'compression' and 'sparsity'" in text
    assert "p.toml: $.stage[1].epochz: unknown key for trainer 'sgd' (did you mean 'epochs'?)" in text
    assert "p.toml: $.stage[1].lr: must be > 0 (got -1.0)" in text
    assert len(lines) == 6


def test_validator_message_survives(registry):
    text = GOOD.replace("compression = 10", "compression = 0.5")
    assert errors_of(text, registry) == ["p.toml: $.stage[0].compression: must be >= 1 (got 0.5)"]


def test_unknown_stage_kind_and_component(registry):
    text = GOOD.replace('do = "attack"', 'do = "atack"').replace('use = "sgd"', 'use = "adam"')
    lines = errors_of(text, registry)
    assert any(line.startswith("p.toml: $.stage[2].do: must be one of train, prune") and "'attack'" in line
               for line in lines)
    assert any("$.stage[1].use: unknown trainer 'adam'" in line and "Installed trainers: sgd" in line
               for line in lines)


def test_literal_and_bool_are_strict(registry):
    text = GOOD.replace('seed = 1', 'seed = 1\ndeterministic = "yes"\ndevice = "gpu"')
    lines = errors_of(text, registry)
    assert "p.toml: $.run.deterministic: expected true or false, got str 'yes'" in lines
    assert any(line.startswith("p.toml: $.run.device: must be auto, cpu, mps, cuda or cuda:N") for line in lines)


def test_stage_needing_what_no_earlier_stage_produces(registry):
    text = GOOD + '\n[[stage]]\ndo = "evaluate"\nuse = "synth"\n'
    lines = errors_of(text, registry)
    assert len(lines) == 1
    assert lines[0].startswith("p.toml: $.stage[3]: probe 'synth' needs synthetic, which no earlier stage produces")
    assert 'add a do = "distill" stage before it' in lines[0]


def test_unknown_top_level_table_and_stage_shape(registry):
    lines = errors_of(GOOD + '\n[stages]\nx = 1\n', registry)
    assert lines == ["p.toml: $.stages: unknown top-level table ([[stage]] is singular); expected [run], [data], "
                     "[model], [[stage]] and optionally [sweep]"]
    lines = errors_of(GOOD.replace('probes = [{ use = "count", every = 2 }]', 'probes = [{ use = "count", every = 0 }]'),
                      registry)
    assert lines == ["p.toml: $.stage[1].probes[0].every: must be an integer >= 1 (got 0)"]


def test_missing_tables(registry):
    lines = errors_of('[run]\nname = "x"\nseed = 0\n', registry)
    assert "p.toml: $.data: missing [data] table naming a dataset with `use`" in lines
    assert "p.toml: $.model: missing [model] table naming a model with `use`" in lines


def test_read_toml_accepts_toml_1_1_inline_tables():
    doc = read_toml('a = { x = 1,\n  y = 2, }\n', "f.toml")
    assert doc == {"a": {"x": 1, "y": 2}}


def test_missing_file_is_a_config_error(tmp_path, registry):
    from deepscope.config import load_pipeline

    with pytest.raises(ConfigError) as info:
        load_pipeline(tmp_path / "nope.toml", registry)
    assert "nope.toml: no such pipeline file" in str(info.value)


NESTED = """
[run]
name = "t"
seed = 1
[data]
use = "tiny"
[model]
use = "tiny-mlp"
[[stage]]
do = "probe"
use = "attacked"
"""


def test_component_param_default_is_checked_into_a_spec(registry):
    from deepscope.config import ComponentSpec

    p = parse_pipeline(NESTED, registry)
    attack = p.stages[0].config.attack
    assert isinstance(attack, ComponentSpec) and attack.name == "shift" and attack.config.eps == 0.1
    assert p.resolved()["stage"][0]["attack"]["use"] == "shift"


def test_component_param_accepts_a_name_or_a_table(registry):
    p = parse_pipeline(NESTED + 'attack = "shift"\n', registry)
    assert p.stages[0].config.attack.config.eps == 0.1
    p = parse_pipeline(NESTED + 'attack = { use = "shift", eps = 0.3 }\n', registry)
    assert p.stages[0].config.attack.config.eps == 0.3


def test_component_param_errors_have_nested_paths(registry):
    lines = errors_of(NESTED + 'attack = { use = "shift", epz = 0.3 }\n', registry)
    assert lines == ["p.toml: $.stage[0].attack.epz: unknown key for attack 'shift' (did you mean 'eps'?); "
                     "allowed keys: n_examples, batch_size, targeted, draws, eps"]
    lines = errors_of(NESTED + 'attack = "shfit"\n', registry)
    assert lines[0].startswith("p.toml: $.stage[0].attack.use: unknown attack 'shfit'. Did you mean 'shift'?")
    lines = errors_of(NESTED + "attack = 3\n", registry)
    assert lines == ["p.toml: $.stage[0].attack: expected an attack name or a table with 'use' naming one, got int 3"]


def test_a_many_component_param_is_a_list_of_specs_checked_at_each_index(registry):
    p = parse_pipeline(NESTED + 'more = ["shift", { use = "shift", eps = 0.3 }]\n', registry)
    more = p.stages[0].config.more
    assert [m.name for m in more] == ["shift", "shift"] and [m.config.eps for m in more] == [0.1, 0.3]
    assert p.resolved()["stage"][0]["more"][1] == {"use": "shift", "n_examples": None, "batch_size": 256,
                                                   "targeted": False, "draws": 1, "eps": 0.3}
    assert parse_pipeline(NESTED, registry).stages[0].config.more == []  # the default list
    lines = errors_of(NESTED + 'more = ["shift", { use = "shift", epz = 0.3 }]\n', registry)
    assert lines[0].startswith("p.toml: $.stage[0].more[1].epz: unknown key for attack 'shift'")
    lines = errors_of(NESTED + 'more = { use = "shift" }\n', registry)
    assert lines == ['p.toml: $.stage[0].more: expected an array of attack tables, e.g. [{ use = "..." }], '
                     "got dict {'use': 'shift'}"]


def test_nested_component_runs(registry, tmp_mlflow):
    from deepscope.testing import run_toml

    result = run_toml(NESTED + 'attack = { use = "shift", eps = 0.0 }\n', make_host(toy_plugin))
    assert 0.0 <= result.metrics["probe/attacked/acc"] <= 1.0


def test_probes_key_outside_train_stages(registry):
    lines = errors_of(NESTED + 'probes = [{ use = "count" }]\n', registry)
    assert lines == ['p.toml: $.stage[0].probes: do = "probe" stages run no periodic probes; use a separate [[stage]] '
                     'with do = "probe"']


def test_probes_can_be_a_probe_parameter():
    import types

    import attrs

    from deepscope import hookimpl, param

    @attrs.define
    class HutchConfig:
        probes: int = param(100, doc="random probe vectors")

    module = types.ModuleType("hutch")

    @hookimpl
    def deepscope_register_probes(register):
        register("hutch", lambda cfg: None, HutchConfig)

    module.deepscope_register_probes = deepscope_register_probes
    registry = make_host(toy_plugin, module).registry
    text = NESTED.replace('use = "attacked"', 'use = "hutch"\nprobes = 20')
    assert parse_pipeline(text, registry).stages[0].config.probes == 20


def test_do_must_be_a_string(registry):
    lines = errors_of(GOOD.replace('do = "prune"', 'do = ["prune"]'), registry)
    assert lines[0].startswith("p.toml: $.stage[0].do: must be one of train, prune, attack")


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path, registry):
    from deepscope.config import load_pipeline

    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[run]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, registry)
    assert str(info.value) == f"{path}: not a UTF-8 text file (bad byte at offset 17); TOML files must be UTF-8"


def test_unknown_prune_target_is_caught_before_running(registry):
    lines = errors_of(GOOD.replace("compression = 10", 'compression = 10\ntarget = "effectve"'), registry)
    assert len(lines) == 1
    assert lines[0].startswith("p.toml: $.stage[0].target: unknown prune-target 'effectve'.")
    assert "Installed prune-targets: direct." in lines[0]


def test_two_stages_may_not_log_under_the_same_key(registry):
    text = GOOD + '\n[[stage]]\ndo = "attack"\nuse = "shift"\nname = "shift-small"\neps = 0.3\n'
    assert errors_of(text, registry) == ["p.toml: $.stage[3].name: stage 2 already logs attack/shift-small/... "
                                         "at the same step; give this stage a distinct name"]
    after_training = text.replace('name = "shift-small"\neps = 0.3', 'name = "shift-small"\neps = 0.3\n'
                                  '[[stage]]\ndo = "train"\nuse = "sgd"\n[[stage]]\ndo = "attack"\nuse = "shift"\n'
                                  'name = "shift-small"')
    assert errors_of(after_training, registry)[0].startswith("p.toml: $.stage[3].name:")  # still the first clash
    before_after = GOOD + '\n[[stage]]\ndo = "train"\nuse = "sgd"\n[[stage]]\ndo = "attack"\nuse = "shift"\n' \
                          'name = "shift-small"\n'
    assert parse_pipeline(before_after, registry).stages[-1].key == "attack/shift-small"  # a later step
    renamed = text.replace('name = "shift-small"\neps = 0.3', 'name = "shift-large"\neps = 0.3')
    assert [s.key for s in parse_pipeline(renamed, registry).stages][-2:] == ["attack/shift-small",
                                                                             "attack/shift-large"]


def test_a_nested_attrs_config_resolves_to_toml_tables():
    """A component whose config holds another attrs config (e.g. an expert recipe) logs and hashes as
    plain TOML data, not as an object the TOML writer refuses."""
    import attrs

    from deepscope.config.components import ComponentSpec

    @attrs.define
    class Recipe:
        epochs: int = 3
        milestones: tuple = (1, 2)

    @attrs.define
    class Outer:
        recipe: Recipe = attrs.Factory(Recipe)
        recipes: list = attrs.Factory(lambda: [Recipe(epochs=5)])

    spec = ComponentSpec("distiller", "x", component=None, config=Outer(), path="$.stage[0]")
    resolved = spec.resolved()
    assert resolved == {"use": "x", "recipe": {"epochs": 3, "milestones": [1, 2]},
                        "recipes": [{"epochs": 5, "milestones": [1, 2]}]}
    import tomli

    assert tomli.loads(dump_toml(resolved)) == resolved
