"""Pipeline files: reading TOML (errors as ``file:line:col``) and writing resolved configs (tomli-w)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli
import tomli_w

from ..errors import ConfigError, ConfigIssue
from ..registry import Registry
from .pipeline import Pipeline, build_pipeline


def read_toml(text: str, file: str) -> dict:
    try:
        return tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        line, col = getattr(exc, "lineno", None), getattr(exc, "colno", None)
        msg = getattr(exc, "msg", str(exc))
        loc = f"{file}:{line}:{col}" if line else file
        raise ConfigError([ConfigIssue("", f"TOML syntax error: {msg}")], file=loc) from None


def read_pipeline_file(path: str | Path) -> dict:
    """Read and parse a pipeline file; every failure is a ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no such pipeline file; check the path (cwd is {Path.cwd()})", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not a UTF-8 text file (bad byte at offset {exc.start}); TOML files must be UTF-8",
                          file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the pipeline file: {exc.strerror}", file=str(path)) from None
    return read_toml(text, str(path))


def load_pipeline(path: str | Path, registry: Registry) -> Pipeline:
    return build_pipeline(read_pipeline_file(path), registry, file=str(path))


def parse_pipeline(text: str, registry: Registry, file: str = "<string>") -> Pipeline:
    return build_pipeline(read_toml(text, file), registry, file=file)


def dump_toml(doc: dict) -> str:
    """A resolved config as TOML text (``None`` values, which TOML cannot hold, are left out)."""
    return tomli_w.dumps(_without_none(doc))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_without_none(v) for v in value if v is not None]
    return value
