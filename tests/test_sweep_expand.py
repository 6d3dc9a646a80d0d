"""The [sweep] table: expansion, exclusions, hashing, and validation of every point up front."""

from __future__ import annotations

import itertools

import pytest

import toy_plugin
from deepscope import ConfigError
from deepscope.config import build_pipeline, load_pipeline, read_toml
from deepscope.sweep import expand_sweep
from deepscope.sweep.expand import point_hash
from deepscope.sweep.submit import plan_sweep
from deepscope.testing import make_host

BASE = """
[run]
name = "grid"
seed = 0

[data]
use = "tiny"

[model]
use = "tiny-mlp"

[[stage]]
do = "train"
use = "sgd"
epochs = 1

[[stage]]
do = "prune"
use = "mag"
compression = 2.0
"""


@pytest.fixture(scope="module")
def registry():
    return make_host(toy_plugin).registry


def expand(text: str, registry):
    return expand_sweep(read_toml(text, "sweep.toml"), registry, file="sweep.toml")


def test_grid_zip_and_exclude_match_a_brute_force_enumeration(registry):
    text = BASE + """
[sweep]
executor = "inline"

[sweep.grid]
"stage.1.compression" = [2.0, 4.0, 8.0]
"run.seed" = [0, 1]

[[sweep.zip]]
"stage.0.lr" = [0.1, 0.01]
"stage.0.epochs" = [1, 3]

[[sweep.exclude]]
"stage.1.compression" = 8.0
"run.seed" = 1
"""
    spec, points = expand(text, registry)
    expected = [
        {"stage.1.compression": c, "run.seed": s, "stage.0.lr": lr, "stage.0.epochs": ep}
        for c, s, (lr, ep) in itertools.product([2.0, 4.0, 8.0], [0, 1], [(0.1, 1), (0.01, 3)])
        if not (c == 8.0 and s == 1)
    ]
    assert [p.values for p in points] == expected
    assert len(points) == 3 * 2 * 2 - 2
    for p in points:  # each value landed where its key points
        assert p.pipeline.stages[1].config.compression == p.values["stage.1.compression"]
        assert p.pipeline.run.seed == p.values["run.seed"]
        assert p.pipeline.stages[0].config.lr == p.values["stage.0.lr"]
        assert p.pipeline.stages[0].config.epochs == p.values["stage.0.epochs"]
        assert p.pipeline.run.name.startswith("grid [stage.1.compression=")
    assert len({p.hash for p in points}) == len(points)


def test_hash_is_of_the_resolved_config(registry):
    spec, points = expand(BASE + '[sweep.grid]\n"run.seed" = [0, 1]\n', registry)
    # the same experiments written with the defaults spelled out, in another order, under another name
    explicit = BASE.replace('use = "tiny"\n', 'n_train = 64\nuse = "tiny"\nclasses = 3\n').replace(
        'name = "grid"', 'name = "other name"')
    _, again = expand(explicit + '[sweep.grid]\n"run.seed" = [0, 1]\n', registry)
    assert [p.hash for p in again] == [p.hash for p in points]
    _, changed = expand(BASE.replace("epochs = 1", "epochs = 2") + '[sweep.grid]\n"run.seed" = [0, 1]\n', registry)
    assert not {p.hash for p in changed} & {p.hash for p in points}


def test_a_point_config_written_to_disk_reloads_to_the_same_hash(registry, tmp_path):
    from deepscope.config import dump_toml

    _, points = expand(BASE + '[sweep.grid]\n"stage.1.compression" = [2.0, 16.0]\n', registry)
    for p in points:
        path = tmp_path / f"{p.hash}.toml"
        path.write_text(dump_toml(p.pipeline.resolved()))
        assert point_hash(load_pipeline(path, registry)) == p.hash


def test_one_bad_point_fails_the_whole_sweep_naming_it(registry):
    text = BASE + '[sweep.grid]\n"stage.0.epochs" = [1, 0, 2]\n"run.seed" = [5]\n'
    with pytest.raises(ConfigError) as err:
        expand(text, registry)
    (issue,) = err.value.issues
    assert issue.path == "sweep point 1 (stage.0.epochs=0, run.seed=5): $.stage[0].epochs"
    assert issue.message == "must be > 0 (got 0)"
    assert str(err.value).startswith("sweep.toml: sweep point 1 ")


@pytest.mark.parametrize("sweep,path,fragment", [
    ('[sweep.grid]\n"stage.5.lr" = [0.1]\n', '$.sweep.grid."stage.5.lr"', "there is no stage.5"),
    ('[sweep.grid]\n"stages.0.lr" = [0.1]\n', '$.sweep.grid."stages.0.lr"', "did you mean 'stage'"),
    ('[sweep.grid]\n"stage.0.compression" = []\n', '$.sweep.grid."stage.0.compression"', "non-empty array"),
    ('[sweep.grid]\n"run.seed" = [1, 2, 1]\n', '$.sweep.grid."run.seed"', "appears twice"),
    ('[sweep]\nexecutor = "slrum"\n[sweep.grid]\n"run.seed" = [1]\n', "$.sweep.executor", "Did you mean 'slurm'"),
    ('[sweep]\nworkers = 0\n[sweep.grid]\n"run.seed" = [1]\n', "$.sweep.workers", "integer >= 1"),
    ('[[sweep.zip]]\n"run.seed" = [1, 2]\n"stage.0.lr" = [0.1]\n', '$.sweep.zip[0]."run.seed"', "same length"),
    ('[sweep.grid]\n"run.seed" = [1, 2]\n[[sweep.exclude]]\n"stage.0.lr" = 0.1\n', '$.sweep.exclude[0]."stage.0.lr"',
     "not a swept key"),
    ('[sweep]\nexecutor = "slurm"\n[sweep.grid]\n"run.seed" = [1]\n[sweep.slurm]\ntime = 0\n', "$.sweep.slurm.time",
     "must be > 0"),
    ('[sweep]\ngird = 1\n', "$.sweep.gird", "did you mean 'grid'"),
])
def test_sweep_table_errors_name_their_key(registry, sweep, path, fragment):
    with pytest.raises(ConfigError) as err:
        expand(BASE + sweep, registry)
    hits = [i for i in err.value.issues if i.path == path]
    assert hits, err.value.issues
    assert fragment in hits[0].message
    assert f"sweep.toml: {path}: " in str(err.value)


def test_executor_table_is_checked_by_its_config_class(registry):
    spec, _ = expand(BASE + '[sweep]\nexecutor = "slurm"\n[sweep.grid]\n"run.seed" = [1]\n'
                            '[sweep.slurm]\npartition = "gpu"\ntime = 30\n', registry)
    assert spec.executor == "slurm"
    assert (spec.executor_config.partition, spec.executor_config.time, spec.executor_config.gpus) == ("gpu", 30, None)


def test_plan_names_its_directory_after_the_run(registry, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(BASE + '[sweep.grid]\n"run.seed" = [1, 2]\n')
    plan = plan_sweep(path, registry)
    assert str(plan.directory) == "sweeps/grid" and len(plan.points) == 2
    base = build_pipeline({k: v for k, v in read_toml(BASE, "b").items()}, registry)
    assert base.run.seed == 0  # the base document is left untouched by expansion
