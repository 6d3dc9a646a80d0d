"""Property test: a mutated pipeline is either rejected by validate (exit 2, a key path, no traceback)
or accepted, and then it runs without an internal error."""

from __future__ import annotations

import copy
import io

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

import toy_plugin
from deepscope import ConfigError, DeepscopeError
from deepscope.config import build_pipeline, read_toml
from deepscope.runner import run_pipeline
from deepscope.testing import make_host

BASE = {
    "run": {"name": "fuzz", "seed": 0},
    "data": {"use": "tiny", "n_train": 32, "classes": 3},
    "model": {"use": "tiny-mlp", "hidden": 4},
    "stage": [
        {"do": "train", "use": "sgd", "epochs": 1, "lr": 0.1, "probes": [{"use": "count", "every": 1}]},
        {"do": "prune", "use": "mag", "sparsity": 0.5},
        {"do": "attack", "use": "shift", "eps": 0.1, "n_examples": 8},
        {"do": "probe", "use": "count", "scale": 2.0},
    ],
}
#: above this, an accepted count (epochs, n_train...) would make the run too long for a test: not run
LARGEST_RUN = 64

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),  # unicode included
    st.booleans(),
)
#: names that exist, so a mutation often makes a different but valid choice
NAMES = ["tiny", "tiny-mlp", "sgd", "mag", "shift", "count", "train", "prune", "attack", "probe", "evaluate",
         "distill", "direct", "synthetic", "real", "auto", "cpu"]


def same_kind(value):
    """A value of the same TOML type as ``value``: the mutations a user makes by mistake most often."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(min_value=-3, max_value=40)
    if isinstance(value, float):
        return st.floats(min_value=-1.0, max_value=3.0) | st.sampled_from([0.0, 1.0, float("inf"), float("nan")])
    if isinstance(value, str):
        return st.sampled_from(NAMES) | st.text(max_size=6)
    return values


values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)


def _tables(doc: dict) -> list[dict]:
    """Every table a mutation may touch: the top-level ones, each stage, each periodic probe."""
    found = [doc] + [v for v in doc.values() if isinstance(v, dict)]
    for stage in doc.get("stage", []) if isinstance(doc.get("stage"), list) else []:
        if isinstance(stage, dict):
            found.append(stage)
            found.extend(p for p in stage.get("probes", []) if isinstance(p, dict)) \
                if isinstance(stage.get("probes"), list) else None
    return found


@st.composite
def mutated(draw) -> dict:
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        tables = _tables(doc)
        table = tables[draw(st.integers(0, len(tables) - 1))]
        keys = sorted(table)
        action = draw(st.sampled_from(["nudge", "nudge", "nudge", "replace", "delete", "add", "shape"]))
        if action == "add" or not keys:
            table[draw(st.text(min_size=1, max_size=8))] = draw(values)
        elif action == "delete":
            del table[draw(st.sampled_from(keys))]
        elif action == "nudge":
            key = draw(st.sampled_from(keys))
            table[key] = draw(same_kind(table[key]))
        elif action == "shape":  # a table where a value belongs, or the other way round
            key = draw(st.sampled_from(keys))
            table[key] = {"use": table[key]} if not isinstance(table[key], dict) else [table[key]]
        else:
            table[draw(st.sampled_from(keys))] = draw(values)
    return doc


def _largest_int(value) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return abs(value)
    if isinstance(value, dict):
        return max((_largest_int(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((_largest_int(v) for v in value), default=0)
    return 0


@pytest.fixture(scope="module")
def fuzz_host():
    return make_host(toy_plugin)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(doc=mutated())
def test_a_mutated_pipeline_is_rejected_with_key_paths_or_runs(fuzz_host, doc):
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):  # not expressible in TOML (e.g. a nan key): no user can write it
        return
    try:
        pipeline = build_pipeline(read_toml(text, "fuzz.toml"), fuzz_host.registry, file="fuzz.toml")
    except ConfigError as exc:
        assert exc.issues, "a ConfigError without any issue"
        for issue in exc.issues:
            assert issue.path.startswith("$") or exc.file.startswith("fuzz.toml:"), issue
            assert issue.message and "Traceback" not in issue.message
        return
    if _largest_int(doc) > LARGEST_RUN:
        return  # accepted, but e.g. a million epochs: validated only
    try:
        run_pipeline(pipeline, fuzz_host, track=False, console=Console(file=io.StringIO()))
    except DeepscopeError:
        pass  # a user error found at run time (exit 2) is fine; an internal error (RunFailed) is not


def test_the_cli_rejects_a_mutated_file_with_exit_2_and_no_traceback(tmp_path, monkeypatch, capsys):
    from deepscope.cli import main
    from deepscope.plugins import set_host

    monkeypatch.setenv("DEEPSCOPE_PLUGINS_MODULES", "toy_plugin")
    set_host(None)
    try:
        doc = copy.deepcopy(BASE)
        doc["stage"][0]["epochs"] = "ten ☃"
        doc["stage"][2]["eps"] = float("inf")
        path = tmp_path / "bad.toml"
        path.write_text(tomli_w.dumps(doc), encoding="utf-8")
        assert main(["validate", str(path)]) == 2
        err = capsys.readouterr().err
        assert "$.stage[0].epochs" in err and "$.stage[2].eps" in err and "Traceback" not in err
    finally:
        set_host(None)
