"""The content-addressed cache: stable keys, atomic builds, one build under concurrency."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from deepscope.cache import Cache, cache_key, cache_root, canonical_json, load_tensors, save_tensors

CONFIG = {"dataset": "cifar10", "epochs": 50, "lr": 0.01, "zca": True, "layers": [64, 128], "seed": None,
          "attack": {"use": "pgd", "eps": 0.03}}


# --------------------------------------------------------------------------- keys


def test_same_config_same_key():
    assert cache_key(CONFIG) == cache_key(json.loads(json.dumps(CONFIG)))


def test_key_order_does_not_matter():
    reordered = dict(reversed(list(CONFIG.items())))
    reordered["attack"] = {"eps": 0.03, "use": "pgd"}
    assert list(reordered) != list(CONFIG)
    assert cache_key(reordered) == cache_key(CONFIG)


def test_tuples_hash_as_lists():
    assert cache_key({**CONFIG, "layers": (64, 128)}) == cache_key(CONFIG)


@pytest.mark.parametrize("change", [
    {"dataset": "cifar100"}, {"epochs": 51}, {"lr": 0.010000000000000002}, {"zca": False},
    {"layers": [128, 64]}, {"layers": [64, 128, 10]}, {"seed": 0}, {"attack": {"use": "pgd", "eps": 0.031}},
    {"extra": 1}, {"epochs": 50.0}, {"zca": 1},
], ids=repr)
def test_any_changed_value_changes_the_key(change):
    assert cache_key({**CONFIG, **change}) != cache_key(CONFIG)


def test_a_removed_key_changes_the_key():
    smaller = dict(CONFIG)
    del smaller["seed"]
    assert cache_key(smaller) != cache_key(CONFIG)


def test_key_is_sha256_of_the_documented_canonical_json():
    # written by hand, so a change of format (which would orphan every existing entry) is noticed
    text = '{"a":[1,2.5,"x"],"b":{"c":null,"d":true},"e":0.1}'
    config = {"e": 0.1, "b": {"d": True, "c": None}, "a": (1, 2.5, "x")}
    assert canonical_json(config) == text
    key = cache_key(config)
    assert key == hashlib.sha256(text.encode()).hexdigest()[:len(key)]
    assert len(key) >= 16 and all(c in "0123456789abcdef" for c in key)


@pytest.mark.parametrize("bad, where", [({1: "a"}, "$"), ({"a": {"b": object()}}, "$.a.b"),
                                        ({"a": [0, float("nan")]}, "$.a[1]")])
def test_unhashable_configs_are_refused_with_their_path(bad, where):
    with pytest.raises(TypeError, match=r"cache key: " + __import__("re").escape(where)):
        cache_key(bad)


# --------------------------------------------------------------------------- where it lives


def test_deepscope_cache_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSCOPE_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "mine"
    entry = Cache().entry("kernels", CONFIG)
    assert entry.path == tmp_path / "mine" / "kernels" / cache_key(CONFIG)
    entry.get_or_build(lambda d: None)
    assert (tmp_path / "mine" / "kernels" / entry.key).is_dir()
    assert not (tmp_path / "xdg").exists()


def test_xdg_then_home_fallback(tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPSCOPE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "deepscope"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "deepscope"
    assert not (tmp_path / "home").exists()  # nothing is created until an entry is built


def test_bad_namespace_is_refused(tmp_path):
    for bad in ("", "../up", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="cache namespace"):
            Cache(tmp_path).entry(bad, CONFIG)


def test_import_does_not_load_torch():
    code = "import sys, deepscope.cache; assert 'torch' not in sys.modules, 'torch was imported'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


# --------------------------------------------------------------------------- building


def _write(calls: list, text: str, directory: Path) -> None:
    calls.append(directory)
    (directory / "data.txt").write_text(text)


def test_get_or_build_builds_once(tmp_path):
    cache, calls = Cache(tmp_path), []
    first = cache.entry("ns", CONFIG).get_or_build(partial(_write, calls, "one"))
    second = cache.entry("ns", dict(CONFIG)).get_or_build(partial(_write, calls, "two"))
    assert len(calls) == 1 and first == second == tmp_path / "ns" / cache_key(CONFIG)
    assert calls[0] != first  # the build ran in a temporary folder, not in place
    assert (first / "data.txt").read_text() == "one"


def test_entry_stores_its_config(tmp_path):
    config = json.loads(json.dumps(CONFIG))
    entry = Cache(tmp_path).entry("ns", config)
    config["attack"]["eps"] = 0.5  # changing the caller's dict afterwards must not change the entry
    entry.get_or_build(lambda d: None)
    stored = json.loads((entry.path / "config.json").read_text())
    assert stored == json.loads(canonical_json(CONFIG)) == entry.load_config()
    assert cache_key(stored) == entry.key


def _leftovers(namespace: Path) -> list[str]:
    return sorted(p.name for p in namespace.iterdir() if not p.name.endswith(".lock"))


def test_failed_build_leaves_nothing(tmp_path):
    entry = Cache(tmp_path).entry("ns", CONFIG)
    seen = []

    def broken(directory: Path) -> None:
        seen.append(directory)
        (directory / "half.bin").write_bytes(b"\0" * 1000)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        entry.get_or_build(broken)
    assert not entry.exists() and not seen[0].exists()
    assert _leftovers(tmp_path / "ns") == []
    # and the next attempt builds normally
    calls = []
    entry.get_or_build(partial(_write, calls, "ok"))
    assert len(calls) == 1 and _leftovers(tmp_path / "ns") == [entry.key]


def test_remove_then_rebuild(tmp_path):
    entry, calls = Cache(tmp_path).entry("ns", CONFIG), []
    assert entry.remove() is False
    entry.get_or_build(partial(_write, calls, "a"))
    assert entry.remove() is True
    assert not entry.exists() and _leftovers(tmp_path / "ns") == []
    entry.get_or_build(partial(_write, calls, "b"))
    assert len(calls) == 2 and (entry.path / "data.txt").read_text() == "b"


def test_stale_temp_folders_are_cleaned_and_fresh_ones_kept(tmp_path):
    namespace = tmp_path / "ns"
    other = cache_key({"other": 1})
    stale, fresh = namespace / f".tmp-{other}-crashed", namespace / f".tmp-{other}-building"
    stale.mkdir(parents=True)
    fresh.mkdir()
    day_and_a_bit = time.time() - 25 * 3600
    os.utime(stale, (day_and_a_bit, day_and_a_bit))
    Cache(tmp_path).entry("ns", CONFIG).get_or_build(lambda d: None)
    assert not stale.exists() and fresh.exists()


def test_old_temp_folder_of_a_live_builder_is_kept(tmp_path):
    from deepscope.cache import _flock

    namespace = tmp_path / "ns"
    other = cache_key({"other": 1})
    busy = namespace / f".tmp-{other}-slow-build"
    busy.mkdir(parents=True)
    old = time.time() - 25 * 3600
    os.utime(busy, (old, old))
    script = ("import sys, time; from pathlib import Path; from deepscope.cache import _flock\n"
              "with _flock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(30)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, str(namespace / f"{other}.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        Cache(tmp_path).entry("ns", CONFIG).get_or_build(lambda d: None)
        assert busy.exists()
    finally:
        holder.kill()
        holder.wait()
    with _flock(namespace / f"{other}.lock", blocking=False) as free:
        assert free  # the holder is gone, so the next build may clean its folder


# --------------------------------------------------------------------------- concurrency


def _slow_build(counter: Path, directory: Path) -> None:
    time.sleep(0.3)
    with open(counter, "a") as f:
        f.write(f"{os.getpid()}\n")
    (directory / "data.txt").write_text(f"built by {os.getpid()}")


def _worker(root: str, counter: str, barrier, results) -> None:
    barrier.wait()
    path = Cache(root).entry("mtt-experts", CONFIG).get_or_build(partial(_slow_build, Path(counter)))
    results.put((os.getpid(), str(path), (path / "data.txt").read_text()))


def test_four_processes_build_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    counter = tmp_path / "builds.txt"
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path / "cache"), str(counter), barrier, results))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    got = [results.get(timeout=10) for _ in procs]
    builders = counter.read_text().split()
    assert len(builders) == 1
    assert {pid for pid, _, _ in got} == {p.pid for p in procs}
    assert {(path, text) for _, path, text in got} == {
        (str(tmp_path / "cache" / "mtt-experts" / cache_key(CONFIG)), f"built by {builders[0]}")}


# --------------------------------------------------------------------------- tensors


def test_tensors_round_trip(tmp_path):
    import torch

    tensors = {"zca": torch.randn(5, 5, dtype=torch.float64), "steps": [torch.arange(3), torch.ones(2)], "n": 7}

    def build(directory: Path) -> None:
        save_tensors(directory, "whitening", tensors)

    entry = Cache(tmp_path).entry("zca", {"dataset": "cifar10"})
    entry.get_or_build(build)
    loaded = entry.load("whitening")
    assert torch.equal(loaded["zca"], tensors["zca"]) and loaded["zca"].dtype == torch.float64
    assert all(torch.equal(a, b) for a, b in zip(loaded["steps"], tensors["steps"])) and loaded["n"] == 7
    assert torch.equal(load_tensors(entry.path, "whitening.pt")["zca"], tensors["zca"])


class NotATensor:
    pass


def test_loading_refuses_arbitrary_objects(tmp_path):
    import torch

    torch.save({"x": NotATensor()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_tensors(tmp_path, "evil")


def test_tensor_names_stay_inside_the_entry(tmp_path):
    with pytest.raises(ValueError, match="no folders"):
        save_tensors(tmp_path, "../outside", {})
