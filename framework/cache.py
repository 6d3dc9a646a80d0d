"""A content-addressed cache directory for large derived artifacts.

Expert trajectories, kernels, ZCA matrices and preprocessed datasets are too
big for MLflow and too slow to rebuild in every sweep point. An entry lives at
``<root>/<namespace>/<key>/`` where ``key`` hashes the resolved config that
produced it, so a changed parameter is a different entry and never a stale one.

Entries are built in a temporary sibling folder and renamed into place when
complete (a reader never sees half an entry, a crash leaves none), under an
``fcntl.flock`` on ``<root>/<namespace>/<key>.lock`` so concurrent sweep
workers asking for the same missing entry build it once.

No torch at import time: the tensor helpers import it when called.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

__all__ = ["Cache", "CacheEntry", "cache_key", "cache_root", "canonical_json", "load_tensors", "save_tensors"]

CONFIG_FILE = "config.json"
KEY_LENGTH = 32  # hex characters of the sha256: 128 bits
STALE_AFTER_S = 24 * 3600  # temp folders older than this, with no builder holding the lock, are removed
_TMP_PREFIX = ".tmp-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def cache_root() -> Path:
    """``$DEEPSCOPE_CACHE``, else ``$XDG_CACHE_HOME/deepscope``, else ``~/.cache/deepscope``.

    Not created here: the cache creates folders only when it first writes.
    """
    explicit = os.environ.get("DEEPSCOPE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore relative values
        return Path(xdg) / "deepscope"
    return Path.home() / ".cache" / "deepscope"


# --------------------------------------------------------------------------- keys


def _canonical(value: Any, path: str) -> Any:
    """``value`` as plain JSON types; anything ambiguous is refused rather than guessed."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"cache key: {path} is {value!r}; non-finite floats have no JSON form, "
                            "pass them as strings if they really are part of the config")
        return value  # json writes floats with repr(), which round-trips exactly
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"cache key: {path} has the key {k!r} of type {type(k).__name__}; keys must be "
                                "strings (1 and '1' would otherwise give the same key)")
            out[k] = _canonical(v, f"{path}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cache key: {path} is a {type(value).__name__}; a cache config holds only dicts, lists, "
                    "tuples, strings, numbers, booleans, None and paths. Convert it (e.g. attrs.asdict, "
                    "or ComponentSpec.resolved()) before asking for an entry")


def canonical_json(config: Mapping) -> str:
    """The exact text that is hashed: sorted keys, tuples as lists, floats by repr, no spaces."""
    if not isinstance(config, Mapping):
        raise TypeError(f"cache key: the config must be a mapping, got {type(config).__name__}")
    return json.dumps(_canonical(config, "$"), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def cache_key(config: Mapping) -> str:
    """The sha256 (first 32 hex characters) of :func:`canonical_json` of ``config``."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()[:KEY_LENGTH]


# --------------------------------------------------------------------------- entries


@contextlib.contextmanager
def _flock(lock_path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``lock_path``; yields False if non-blocking and already held."""
    import fcntl

    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class CacheEntry:
    """One entry: ``key``, final ``path``, and the ``config`` it was asked for."""

    def __init__(self, namespace_dir: Path, config: Mapping):
        text = canonical_json(config)
        #: a plain-JSON copy, so mutating the caller's dict later cannot make config.json disagree with the key
        self.config: dict = json.loads(text)
        self.key = hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_LENGTH]
        self.namespace_dir = namespace_dir
        self.path = namespace_dir / self.key
        self.lock_path = namespace_dir / f"{self.key}.lock"

    def __repr__(self) -> str:
        return f"CacheEntry({str(self.path)!r})"

    def exists(self) -> bool:
        """Whether the complete entry is in place (a half-built one never is)."""
        return self.path.is_dir()

    def get_or_build(self, build: Callable[[Path], None]) -> Path:
        """The entry's folder; if missing, ``build(tmpdir)`` fills a temporary folder first.

        ``build`` runs under the entry's lock, so of several processes asking at
        once one builds and the others wait, then read. If ``build`` raises, the
        temporary folder is removed and nothing is left behind. ``config.json``
        is written by the cache after ``build``: do not use that name.
        """
        if self.exists():
            return self.path
        self.namespace_dir.mkdir(parents=True, exist_ok=True)
        with _flock(self.lock_path):
            if self.exists():  # another process built it while we waited
                return self.path
            _remove_stale_temps(self.namespace_dir, held_key=self.key)
            tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{self.key}-", dir=self.namespace_dir))
            try:
                build(tmp)
                (tmp / CONFIG_FILE).write_text(json.dumps(self.config, indent=2, sort_keys=True,
                                                          ensure_ascii=False) + "\n")
                os.rename(tmp, self.path)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if self.exists():  # built meanwhile by a process the lock did not reach (flock on some NFS)
                    return self.path
                raise
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return self.path

    def remove(self) -> bool:
        """Delete the entry (under its lock); returns whether there was one."""
        if not self.namespace_dir.is_dir():
            return False
        with _flock(self.lock_path):
            if not self.exists():
                return False
            # rename first, so the entry disappears at once rather than file by file
            trash = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{self.key}-removed-", dir=self.namespace_dir))
            os.rename(self.path, trash / self.key)
            shutil.rmtree(trash, ignore_errors=True)
        return True

    def load_config(self) -> dict:
        """The ``config.json`` stored in the entry."""
        return json.loads((self.path / CONFIG_FILE).read_text())

    def load(self, name: str, *, map_location: Any = "cpu") -> Any:
        """Shorthand for ``load_tensors(self.path, name)``."""
        return load_tensors(self.path, name, map_location=map_location)


def _remove_stale_temps(namespace_dir: Path, *, held_key: str, older_than_s: float = STALE_AFTER_S) -> None:
    """Remove temp folders a crashed builder left, if old and no process holds their entry's lock.

    ``held_key`` is the entry whose lock the caller holds: its old temp folders are stale by definition
    (a second ``flock`` from this process would wrongly look taken).
    """
    cutoff = time.time() - older_than_s
    for tmp in namespace_dir.glob(f"{_TMP_PREFIX}*"):
        try:
            if not tmp.is_dir() or tmp.stat().st_mtime > cutoff:
                continue
        except FileNotFoundError:
            continue
        key = tmp.name[len(_TMP_PREFIX):].split("-", 1)[0]
        lock = namespace_dir / f"{key}.lock"
        if key == held_key or not lock.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        with _flock(lock, blocking=False) as free:
            if free:
                shutil.rmtree(tmp, ignore_errors=True)


class Cache:
    """The cache under ``root`` (default :func:`cache_root`, read when the Cache is made)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else cache_root()

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    def entry(self, namespace: str, config: Mapping) -> CacheEntry:
        """The entry of ``namespace`` (e.g. ``"mtt-experts"``) for the resolved ``config``."""
        if not isinstance(namespace, str) or not _NAME.match(namespace):
            raise ValueError(f"cache namespace {namespace!r}: use letters, digits, '.', '_' and '-', "
                             "starting with a letter or digit (e.g. 'mtt-experts')")
        return CacheEntry(self.root / namespace, config)


# --------------------------------------------------------------------------- tensors


def _tensor_file(directory: str | os.PathLike, name: str) -> Path:
    if not _NAME.match(name):
        raise ValueError(f"tensor file name {name!r}: use letters, digits, '.', '_' and '-' (no folders)")
    return Path(directory) / (name if name.endswith(".pt") else f"{name}.pt")


def save_tensors(directory: str | os.PathLike, name: str, tensors: Any) -> Path:
    """``torch.save`` ``tensors`` (a tensor, or dicts/lists of tensors and numbers) as ``<name>.pt``."""
    import torch

    path = _tensor_file(directory, name)
    torch.save(tensors, path)
    return path


def load_tensors(directory: str | os.PathLike, name: str, *, map_location: Any = "cpu") -> Any:
    """Load ``<name>.pt`` with ``weights_only=True``: tensors and plain containers, never arbitrary code."""
    import torch

    return torch.load(_tensor_file(directory, name), map_location=map_location, weights_only=True)
