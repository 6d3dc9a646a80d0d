"""Components chosen in a pipeline: ``{ use = NAME, ...params }`` checked against the registry.

Phase 2 of loading: each component's parameters are structured into the attrs
config class its plugin registered, nested components included.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from ..errors import ConfigError, ConfigIssue, DuplicateComponentError
from ..params import field_doc
from ..registry import Component, Registry
from .values import article, close_match, describe, format_validator, structure_value


def _resolved_fields(cls: type) -> tuple[attrs.Attribute, ...]:
    try:
        attrs.resolve_types(cls)
    except Exception:  # unresolved forward references: fall back to Any
        pass
    return attrs.fields(cls)


def structure_config(cls: type, table: dict, path: str, *, what: str, registry: Registry | None = None,
                     ) -> tuple[Any, list[ConfigIssue]]:
    """Check ``table`` against attrs class ``cls``; return (instance, issues)."""
    issues: list[ConfigIssue] = []
    fields = {f.alias or f.name: f for f in _resolved_fields(cls) if f.init}
    for key in table:
        if key not in fields:
            allowed = ", ".join(fields) or "(no parameters)"
            issues.append(ConfigIssue(f"{path}.{key}", f"unknown key for {what}{close_match(key, list(fields))}; "
                                                        f"allowed keys: {allowed}"))
    values: dict[str, Any] = {}
    for key, field in fields.items():
        fpath = f"{path}.{key}"
        component_kind = field.metadata.get("component") if field.metadata else None
        if key not in table:
            if field.default is attrs.NOTHING:
                issues.append(ConfigIssue(fpath, f"required key missing for {what}" +
                                          (f" ({field_doc(field)})" if field_doc(field) else "")))
            elif component_kind:  # a default like {"use": "pgd"} is checked like a written table
                default = field.default.factory() if isinstance(field.default, attrs.Factory) else field.default
                spec, sub = _structure_components(registry, component_kind, default, fpath, field)
                issues.extend(sub)
                values[key] = spec
            continue
        raw = table[key]
        if component_kind:
            spec, sub = _structure_components(registry, component_kind, raw, fpath, field)
            issues.extend(sub)
            values[key] = spec
            continue
        tp = field.type if field.type is not None and not isinstance(field.type, str) else Any
        value, sub = structure_value(raw, tp, fpath)
        if sub:
            issues.extend(sub)
            continue
        if _non_finite(value) and not (field.metadata or {}).get("allow_nonfinite"):
            issues.append(ConfigIssue(fpath, f"must be a finite number (got {value!r}); {what} does not accept "
                                             "inf or nan here"))
            continue
        if field.validator is not None:
            try:
                field.validator(None, field, value)
            except (ValueError, TypeError) as exc:
                issues.append(ConfigIssue(fpath, format_validator(exc)[1]))
                continue
        values[key] = value
    if issues:
        return None, issues
    try:
        return cls(**values), []
    except (ValueError, TypeError) as exc:  # __attrs_post_init__ cross-field checks
        name, msg = format_validator(exc)
        return None, [ConfigIssue(f"{path}.{name}" if name in fields else path, msg)]


def _structure_components(registry, kind: str, raw: Any, path: str, field) -> tuple[Any, list[ConfigIssue]]:
    """One nested component, or with ``many`` an array of them (each checked at ``path[i]``)."""
    if not field.metadata.get("many"):
        return structure_component(registry, kind, raw, path)
    if raw is None:
        return None, []
    if not isinstance(raw, list):
        return None, [ConfigIssue(path, f"expected an array of {kind} tables, e.g. [{{ use = \"...\" }}], "
                                        f"got {describe(raw)}")]
    specs, issues = [], []
    for i, item in enumerate(raw):
        spec, sub = structure_component(registry, kind, item, f"{path}[{i}]")
        issues.extend(sub)
        specs.append(spec)
    return specs, issues


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    return False


@attrs.define
class ComponentSpec:
    """A component chosen in a pipeline, with its checked config."""

    kind: str
    name: str
    component: Component
    config: Any
    path: str
    raw: dict = attrs.field(factory=dict)

    def build(self, *args, **kwargs):
        """Build the component; its ConfigErrors are located under this spec's path."""
        try:
            return self.component.build(self.config, *args, **kwargs)
        except ConfigError as exc:
            raise exc.with_prefix(self.path) from exc

    def resolved(self) -> dict:
        """``use`` plus every parameter with defaults filled in (for logging)."""
        return {"use": self.name, **_config_to_dict(self.config)}


def _config_to_dict(config: Any) -> dict:
    if config is None:
        return {}
    out = {}
    for f in attrs.fields(type(config)):
        if not f.init:
            continue
        value = getattr(config, f.name)
        out[f.alias or f.name] = _plain_value(value)
    return out


def _plain_value(value: Any) -> Any:
    """A config value as TOML data: nested component specs resolved, nested attrs configs as tables."""
    if isinstance(value, ComponentSpec):
        return value.resolved()
    if attrs.has(type(value)):
        return _config_to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_value(v) for k, v in value.items()}
    return value


def structure_component(registry: Registry | None, kind: str, table: Any, path: str,
                        *, reserved: tuple[str, ...] = ("use",)) -> tuple[ComponentSpec | None, list[ConfigIssue]]:
    """Resolve ``{use = NAME, ...params}`` against the registry and the component's config class."""
    if table is None:
        return None, []
    if isinstance(table, str):  # shorthand: backend = "resnet-18" means { use = "resnet-18" }
        table = {"use": table}
    if not isinstance(table, dict):
        return None, [ConfigIssue(path, f"expected {article(kind)} {kind} name or a table with 'use' naming one, "
                                        f"got {describe(table)}")]
    use = table.get("use")
    if not isinstance(use, str):
        return None, [ConfigIssue(f"{path}.use", f"required: the name of a {kind}" +
                                  (f" (got {describe(use)})" if use is not None else ""))]
    if registry is None:
        raise RuntimeError("structure_component needs a registry")
    try:
        comp = registry.find(kind, use)
    except DuplicateComponentError as exc:
        return None, [ConfigIssue(f"{path}.use", str(exc))]
    if comp is None:
        return None, [ConfigIssue(f"{path}.use", registry.unknown_message(kind, use))]
    params = {k: v for k, v in table.items() if k not in reserved}
    if comp.config_cls is None:
        if params:
            return None, [ConfigIssue(f"{path}.{k}", f"unknown key: {kind} {comp.name!r} takes no parameters")
                          for k in params]
        return ComponentSpec(kind, comp.name, comp, None, path, dict(table)), []
    config, issues = structure_config(comp.config_cls, params, path, what=f"{kind} {comp.name!r}",
                                      registry=registry)
    if issues:
        return None, issues
    return ComponentSpec(kind, comp.name, comp, config, path, dict(table)), []
