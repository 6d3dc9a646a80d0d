"""Helpers for writing component config classes (attrs) that document themselves.

A config class is a plain attrs class; ``param`` attaches the one-line doc that
``deepscope show`` prints, and ``component_param`` declares a parameter that is
itself a component (e.g. the attack used inside adversarial training), written
in TOML as an inline table ``{ use = "pgd", eps = 0.03 }``.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import attrs
from attrs import validators as _v

NOTHING = attrs.NOTHING


def param(default: Any = NOTHING, *, doc: str = "", validator: Callable | list | None = None,
          factory: Callable | None = None, converter: Callable | None = None,
          allow_nonfinite: bool = False) -> Any:
    """An attrs field with a docstring for ``deepscope show``.

    Float parameters reject ``inf`` and ``nan`` in pipelines unless ``allow_nonfinite`` is set.
    """
    kwargs: dict[str, Any] = {"metadata": {"doc": doc, "allow_nonfinite": allow_nonfinite}, "validator": validator}
    if factory is not None:
        kwargs["factory"] = factory
    else:
        kwargs["default"] = default
    if converter is not None:
        kwargs["converter"] = converter
    return attrs.field(**kwargs)


def component_param(kind: str, default: Any = None, *, doc: str = "", required: bool = False,
                    many: bool = False) -> Any:
    """A parameter naming another component of ``kind`` with its own parameters.

    TOML: ``attack = { use = "pgd", eps = 0.1, steps = 10 }``; the core checks
    the nested table against that component's config class and stores a
    :class:`deepscope.config.ComponentSpec` (call ``.build()``), or ``default``
    when the key is absent. ``default`` may be a dict such as ``{"use": "pgd"}``.
    With ``many = True`` the parameter is an array of such tables (or names), each
    checked at ``key[i]``, and the value a list of specs; ``default`` is then a list.
    """
    meta = {"doc": doc, "component": kind, "many": many}
    if required:
        return attrs.field(metadata=meta)
    if isinstance(default, (dict, list)):
        return attrs.field(factory=lambda: copy.deepcopy(default), metadata=meta)
    return attrs.field(default=default, metadata=meta)


# Validators: attrs' own, re-exported so plugins need no second import. Their
# messages ("'eps' must be >= 0: -1") are rewritten by the config loader into
# "must be >= 0 (got -1)".
gt = _v.gt
ge = _v.ge
lt = _v.lt
le = _v.le
in_ = _v.in_
and_ = _v.and_
optional = _v.optional


def in_range(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable:
    """Validator for ``low <= x <= high`` with optional open ends."""

    def check(instance, attribute, value):
        if value is None:
            return
        ok_low = value > low if low_open else value >= low
        ok_high = value < high if high_open else value <= high
        if not (ok_low and ok_high):
            lb = "(" if low_open else "["
            hb = ")" if high_open else "]"
            raise ValueError(f"'{attribute.name}' must be in {lb}{low}, {high}{hb}: {value!r}")

    return check


def positive(instance, attribute, value):
    """Validator: value > 0 (None allowed for optional parameters)."""
    if value is not None and not value > 0:
        raise ValueError(f"'{attribute.name}' must be > 0: {value!r}")


def non_negative(instance, attribute, value):
    """Validator: value >= 0 (None allowed for optional parameters)."""
    if value is not None and not value >= 0:
        raise ValueError(f"'{attribute.name}' must be >= 0: {value!r}")


def field_doc(field: attrs.Attribute) -> str:
    return field.metadata.get("doc", "") if field.metadata else ""


def describe_type(tp: Any) -> str:
    """Human-readable type for ``deepscope show``."""
    if isinstance(tp, str):
        return tp
    if tp is type(None):
        return "none"
    name = getattr(tp, "__name__", None)
    origin = getattr(tp, "__origin__", None)
    args = getattr(tp, "__args__", ())
    if origin is not None and str(origin).endswith("Literal"):
        return " | ".join(repr(a) for a in args)
    if args:
        inner = [describe_type(a) for a in args]
        oname = getattr(origin, "__name__", str(origin)) if origin is not None else ""
        if oname in ("Union", "UnionType") or origin is None or "Union" in str(origin):
            return " | ".join(inner)
        return f"{oname}[{', '.join(inner)}]"
    if name:
        return name
    return str(tp).replace("typing.", "")
