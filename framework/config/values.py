"""Typed TOML values: a strict converter, and messages that name the key path.

TOML's native types only (no ``"3"`` -> 3); attrs validator messages become
``must be >= 0 (got -1)``. No torch, no registry here.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any, Literal

import cattrs
from cattrs.v import transform_error

from ..errors import ConfigIssue


def describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _strict(kind: type, accept: tuple[type, ...], label: str):
    def hook(value, _type):
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {label}, got {describe(value)}")
        if not isinstance(value, accept):
            raise TypeError(f"expected {label}, got {describe(value)}")
        return kind(value)

    return hook


def make_converter() -> cattrs.Converter:
    """A converter that accepts TOML's native types only (no ``"3"`` -> 3)."""
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(int, _strict(int, (int,), "an integer"))
    conv.register_structure_hook(float, _strict(float, (int, float), "a number"))
    conv.register_structure_hook(str, _strict(str, (str,), "a string"))
    conv.register_structure_hook(bool, _strict(bool, (bool,), "true or false"))
    return conv


CONVERTER = make_converter()

_ATTRS_MSG = re.compile(r"^'(?P<name>[^']+)' must (?P<rule>.*?): (?P<got>.+)$", re.S)


def format_validator(exc: BaseException) -> tuple[str | None, str]:
    """Turn attrs' "'eps' must be >= 0: -1" into ("eps", "must be >= 0 (got -1)")."""
    text = str(exc.args[0]) if getattr(exc, "args", None) else str(exc)
    m = _ATTRS_MSG.match(text)
    if m:
        return m.group("name"), f"must {m.group('rule')} (got {m.group('got')})"
    return None, text


def _format_cattrs(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, (TypeError, ValueError)) and not isinstance(exc, cattrs.BaseValidationError):
        return format_validator(exc)[1]
    if isinstance(exc, KeyError):
        return "required key missing"
    return f"invalid value ({exc})"


def _is_literal(tp: Any) -> bool:
    return typing.get_origin(tp) is Literal


def _is_optional(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return (origin is typing.Union or origin is types.UnionType) and type(None) in typing.get_args(tp)


def structure_value(value: Any, tp: Any, path: str) -> tuple[Any, list[ConfigIssue]]:
    """Structure one TOML value to ``tp``; errors come back with their key path."""
    if _is_optional(tp):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = inner[0] if len(inner) == 1 else typing.Union[tuple(inner)]
    if _is_literal(tp):
        allowed = typing.get_args(tp)
        if value in allowed and type(value) in {type(a) for a in allowed}:
            return value, []
        options = ", ".join(repr(a) for a in allowed)
        return None, [ConfigIssue(path, f"must be one of {options} (got {value!r})")]
    if tp is Any or tp is typing.Any:
        return value, []
    try:
        return CONVERTER.structure(value, tp), []
    except cattrs.BaseValidationError as exc:
        msgs = transform_error(exc, path=path, format_exception=_format_cattrs)
        issues = []
        for m in msgs:
            text, _, where = m.rpartition(" @ ")
            issues.append(ConfigIssue(where or path, text or m))
        return None, issues
    except (TypeError, ValueError) as exc:
        return None, [ConfigIssue(path, format_validator(exc)[1])]




def close_match(name: str, options: list[str]) -> str:
    """`` (did you mean 'x'?)`` when one option is close to ``name``, else ``""``."""
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
