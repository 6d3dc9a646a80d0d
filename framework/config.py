"""Pipelines from TOML: tomli, then cattrs into attrs classes, in two phases.

Phase 1 structures the skeleton (``[run]``, ``[data]``, ``[model]``,
``[[stage]]``); phase 2 checks each component's own parameters against the
config class its plugin registered. Every problem is collected and reported
together as ``file: $.stage[1].compression: must be > 1 (got 0.5)``.
Nothing here imports torch, so ``deepscope validate`` stays light.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
import tomli
from cattrs.v import transform_error

from .errors import ConfigError, ConfigIssue, DuplicateComponentError
from .params import field_doc, non_negative
from .registry import Component, Registry

#: stage ``do`` -> component kind it uses
STAGE_KINDS = {
    "train": "trainer",
    "prune": "pruner",
    "attack": "attack",
    "distill": "distiller",
    "probe": "probe",
    "evaluate": "probe",
}
#: what a stage of each ``do`` makes available to later stages
STAGE_PROVIDES = {"train": ("trained",), "prune": ("masks",), "distill": ("synthetic",)}
STAGE_RESERVED = ("do", "use", "name", "probes")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


# --------------------------------------------------------------------------- converter


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _strict(kind: type, accept: tuple[type, ...], label: str):
    def hook(value, _type):
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {label}, got {_describe(value)}")
        if not isinstance(value, accept):
            raise TypeError(f"expected {label}, got {_describe(value)}")
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


def _format_validator(exc: BaseException) -> tuple[str | None, str]:
    """Turn attrs' "'eps' must be >= 0: -1" into ("eps", "must be >= 0 (got -1)")."""
    text = str(exc.args[0]) if getattr(exc, "args", None) else str(exc)
    m = _ATTRS_MSG.match(text)
    if m:
        return m.group("name"), f"must {m.group('rule')} (got {m.group('got')})"
    return None, text


def _format_cattrs(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, (TypeError, ValueError)) and not isinstance(exc, cattrs.BaseValidationError):
        return _format_validator(exc)[1]
    if isinstance(exc, KeyError):
        return "required key missing"
    return f"invalid value ({exc})"


def _is_literal(tp: Any) -> bool:
    return typing.get_origin(tp) is Literal


def _is_optional(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return (origin is typing.Union or origin is types.UnionType) and type(None) in typing.get_args(tp)


def _structure_value(value: Any, tp: Any, path: str) -> tuple[Any, list[ConfigIssue]]:
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
        return None, [ConfigIssue(path, _format_validator(exc)[1])]


def _resolved_fields(cls: type) -> tuple[attrs.Attribute, ...]:
    try:
        attrs.resolve_types(cls)
    except Exception:  # unresolved forward references: fall back to Any
        pass
    return attrs.fields(cls)


def _close(name: str, options: list[str]) -> str:
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def structure_config(cls: type, table: dict, path: str, *, what: str, registry: Registry | None = None,
                     ) -> tuple[Any, list[ConfigIssue]]:
    """Check ``table`` against attrs class ``cls``; return (instance, issues)."""
    issues: list[ConfigIssue] = []
    fields = {f.alias or f.name: f for f in _resolved_fields(cls) if f.init}
    for key in table:
        if key not in fields:
            allowed = ", ".join(fields) or "(no parameters)"
            issues.append(ConfigIssue(f"{path}.{key}", f"unknown key for {what}{_close(key, list(fields))}; "
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
                spec, sub = structure_component(registry, component_kind, default, fpath)
                issues.extend(sub)
                values[key] = spec
            continue
        raw = table[key]
        if component_kind:
            spec, sub = structure_component(registry, component_kind, raw, fpath)
            issues.extend(sub)
            values[key] = spec
            continue
        tp = field.type if field.type is not None and not isinstance(field.type, str) else Any
        value, sub = _structure_value(raw, tp, fpath)
        if sub:
            issues.extend(sub)
            continue
        if field.validator is not None:
            try:
                field.validator(None, field, value)
            except (ValueError, TypeError) as exc:
                issues.append(ConfigIssue(fpath, _format_validator(exc)[1]))
                continue
        values[key] = value
    if issues:
        return None, issues
    try:
        return cls(**values), []
    except (ValueError, TypeError) as exc:  # __attrs_post_init__ cross-field checks
        name, msg = _format_validator(exc)
        return None, [ConfigIssue(f"{path}.{name}" if name in fields else path, msg)]


# --------------------------------------------------------------------------- specs


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
        if isinstance(value, ComponentSpec):
            value = value.resolved()
        elif isinstance(value, tuple):
            value = list(value)
        out[f.alias or f.name] = value
    return out


def structure_component(registry: Registry | None, kind: str, table: Any, path: str,
                        *, reserved: tuple[str, ...] = ("use",)) -> tuple[ComponentSpec | None, list[ConfigIssue]]:
    """Resolve ``{use = NAME, ...params}`` against the registry and the component's config class."""
    if table is None:
        return None, []
    if isinstance(table, str):  # shorthand: backend = "resnet-18" means { use = "resnet-18" }
        table = {"use": table}
    if not isinstance(table, dict):
        return None, [ConfigIssue(path, f"expected {_article(kind)} {kind} name or a table with 'use' naming one, "
                                        f"got {_describe(table)}")]
    use = table.get("use")
    if not isinstance(use, str):
        return None, [ConfigIssue(f"{path}.use", f"required: the name of a {kind}" +
                                  (f" (got {_describe(use)})" if use is not None else ""))]
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


@attrs.define
class RunSpec:
    """The ``[run]`` table."""

    name: str = attrs.field(metadata={"doc": "run name shown in MLflow"})
    seed: int = attrs.field(metadata={"doc": "seed for Python, NumPy and torch (required: results must be reproducible)"})
    experiment: str = attrs.field(default="deepscope", metadata={"doc": "MLflow experiment name"})
    device: str = attrs.field(default="auto", validator=lambda _, a, v: _check_device(v),
                              metadata={"doc": "auto | cpu | cuda | cuda:N | mps"})
    deterministic: bool = attrs.field(default=False, metadata={"doc": "torch deterministic algorithms (slower)"})
    tracking_uri: typing.Optional[str] = attrs.field(default=None, metadata={"doc": "MLflow tracking URI"})
    checkpoint_every: int = attrs.field(default=0, validator=non_negative,
                                        metadata={"doc": "checkpoint long stages every N epochs (0: off)"})
    description: str = attrs.field(default="", metadata={"doc": "free text, logged as the run description"})


def _check_device(value: str) -> None:
    if not DEVICE_PATTERN.match(value):
        raise ValueError(f"'device' must be auto, cpu, mps, cuda or cuda:N: {value!r}")


@attrs.define
class PeriodicProbe:
    """A probe run inside a train stage every ``every`` epochs."""

    spec: ComponentSpec
    every: int = 1


@attrs.define
class StageSpec:
    """One ``[[stage]]``: what it does, which component, its checked config."""

    index: int
    do: str
    spec: ComponentSpec
    name: str | None = None
    probes: list[PeriodicProbe] = attrs.field(factory=list)

    @property
    def use(self) -> str:
        return self.spec.name

    @property
    def key(self) -> str:
        """Metric prefix ``<do>/<name or use>``."""
        return f"{self.do}/{self.name or self.use}"

    @property
    def path(self) -> str:
        return f"$.stage[{self.index}]"

    @property
    def config(self) -> Any:
        return self.spec.config


@attrs.define
class Pipeline:
    """A fully checked pipeline, ready for the runner."""

    file: str
    run: RunSpec
    data: ComponentSpec
    model: ComponentSpec
    stages: list[StageSpec]
    raw: dict
    sweep: dict | None = None

    def resolved(self) -> dict:
        """The pipeline with every default filled in (what actually runs)."""
        out: dict[str, Any] = {"run": {k: v for k, v in attrs.asdict(self.run).items() if v is not None}}
        out["data"] = self.data.resolved()
        out["model"] = self.model.resolved()
        stages = []
        for st in self.stages:
            entry = {"do": st.do, **({"name": st.name} if st.name else {}), **st.spec.resolved()}
            if st.probes:
                entry["probes"] = [{"every": p.every, **p.spec.resolved()} for p in st.probes]
            stages.append(entry)
        out["stage"] = stages
        return out

    def flat_params(self) -> dict[str, str]:
        """Flattened resolved config, e.g. ``stage.0.compression``, for MLflow params."""
        flat: dict[str, str] = {}
        _flatten(self.resolved(), "", flat)
        return flat


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}.{i}", out)
    else:
        out[prefix] = str(value)


# --------------------------------------------------------------------------- loading


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


TOP_LEVEL = ("run", "data", "model", "stage", "sweep")


def build_pipeline(doc: dict, registry: Registry, file: str = "<string>") -> Pipeline:
    """Check a parsed TOML document; raise one ConfigError listing every problem."""
    issues: list[ConfigIssue] = []
    for key in doc:
        if key not in TOP_LEVEL:
            hint = " ([[stage]] is singular)" if key == "stages" else _close(key, list(TOP_LEVEL))
            issues.append(ConfigIssue(f"$.{key}", f"unknown top-level table{hint}; expected "
                                                   "[run], [data], [model], [[stage]] and optionally [sweep]"))
    run = None
    run_table = doc.get("run")
    if not isinstance(run_table, dict):
        issues.append(ConfigIssue("$.run", "missing [run] table (it needs at least name and seed)"))
    else:
        run, sub = structure_config(RunSpec, run_table, "$.run", what="[run]")
        issues.extend(sub)
    data = model = None
    for key, kind in (("data", "dataset"), ("model", "model")):
        if key not in doc:
            issues.append(ConfigIssue(f"$.{key}", f"missing [{key}] table naming a {kind} with `use`"))
            continue
        spec, sub = structure_component(registry, kind, doc[key], f"$.{key}")
        issues.extend(sub)
        if key == "data":
            data = spec
        else:
            model = spec
    stages = _build_stages(doc.get("stage", []), registry, issues)
    sweep = doc.get("sweep")
    if sweep is not None and not isinstance(sweep, dict):
        issues.append(ConfigIssue("$.sweep", f"expected a table, got {_describe(sweep)}"))
    if issues:
        raise ConfigError(issues, file=file)
    return Pipeline(file, run, data, model, stages, doc, sweep)


def _build_stages(raw_stages: Any, registry: Registry, issues: list[ConfigIssue]) -> list[StageSpec]:
    if not isinstance(raw_stages, list):
        issues.append(ConfigIssue("$.stage", "expected an array of tables: write each stage as [[stage]]"))
        return []
    stages: list[StageSpec] = []
    available: set[str] = set()
    for i, table in enumerate(raw_stages):
        path = f"$.stage[{i}]"
        if not isinstance(table, dict):
            issues.append(ConfigIssue(path, f"expected a table, got {_describe(table)}"))
            continue
        do = table.get("do")
        if not isinstance(do, str) or do not in STAGE_KINDS:
            got = f" (got {do!r})" if do is not None else ""
            issues.append(ConfigIssue(f"{path}.do", f"must be one of {', '.join(STAGE_KINDS)}{got}"
                                      + (_close(do, list(STAGE_KINDS)) if isinstance(do, str) else "")))
            continue
        kind = STAGE_KINDS[do]
        name = table.get("name")
        if name is not None and not isinstance(name, str):
            issues.append(ConfigIssue(f"{path}.name", f"expected a string, got {_describe(name)}"))
            name = None
        probes_raw = table.get("probes", [])
        # `probes` lists periodic probes in train stages; elsewhere it may be a component's own parameter
        reserved = STAGE_RESERVED if do == "train" else tuple(k for k in STAGE_RESERVED if k != "probes")
        spec, sub = structure_component(registry, kind, table, path, reserved=reserved)
        if do != "train":
            sub = [ConfigIssue(i.path, "only train stages run periodic probes; use a separate [[stage]] with "
                                       "do = \"probe\"")
                   if i.path == f"{path}.probes" and i.message.startswith("unknown key") else i for i in sub]
        issues.extend(sub)
        probes = _build_periodic_probes(probes_raw, registry, f"{path}.probes", issues) if do == "train" else []
        if spec is None:
            continue
        target = getattr(spec.config, "target", None) if do == "prune" else None
        if target is not None:
            try:
                found = registry.find("prune-target", target)
            except DuplicateComponentError as exc:
                issues.append(ConfigIssue(f"{path}.target", str(exc)))
            else:
                if found is None:
                    issues.append(ConfigIssue(f"{path}.target", registry.unknown_message("prune-target", target)))
        missing = [r for r in spec.component.requires if r not in available]
        if missing:
            issues.append(ConfigIssue(path, f"{kind} {spec.name!r} needs {', '.join(missing)}, which no earlier "
                                            f"stage produces ({_producers(missing)})"))
        available.update(STAGE_PROVIDES.get(do, ()))
        available.update(spec.component.provides)
        stage = StageSpec(i, do, spec, name, probes)
        # two stages may share a key only at different steps: a train stage must lie between them
        clash = next((s for s in stages if s.key == stage.key
                      and not any(t.do == "train" and t.index > s.index for t in stages)), None)
        if clash is not None and do != "train":
            issues.append(ConfigIssue(f"{path}.name", f"stage {clash.index} already logs {stage.key}/... at the "
                                                      "same step; give this stage a distinct name"))
        stages.append(stage)
    return stages


def _producers(needs: list[str]) -> str:
    makers = {v: k for k, vs in STAGE_PROVIDES.items() for v in vs}
    return "; ".join(f"add a do = \"{makers[n]}\" stage before it" if n in makers
                     else f"add a stage that provides {n!r}" for n in needs)


def _build_periodic_probes(raw: Any, registry: Registry, path: str, issues: list[ConfigIssue]) -> list[PeriodicProbe]:
    if not isinstance(raw, list):
        issues.append(ConfigIssue(path, "expected an array of inline tables, e.g. "
                                        "probes = [{ use = \"accuracy\", every = 1 }]"))
        return []
    out = []
    for j, table in enumerate(raw):
        ppath = f"{path}[{j}]"
        every = table.get("every", 1) if isinstance(table, dict) else 1
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            issues.append(ConfigIssue(f"{ppath}.every", f"must be an integer >= 1 (got {every!r})"))
            continue
        spec, sub = structure_component(registry, "probe", table, ppath, reserved=("use", "every"))
        issues.extend(sub)
        if spec is not None:
            out.append(PeriodicProbe(spec, every))
    return out


def dump_toml(doc: dict) -> str:
    """A small TOML writer for resolved configs (tables, arrays of tables, scalars)."""
    lines: list[str] = []
    for key, value in doc.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines.extend(_toml_items(value))
            lines.append("")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                lines.append(f"[[{key}]]")
                lines.extend(_toml_items(item))
                lines.append("")
        else:
            lines.insert(0, f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(lines)


def _toml_items(table: dict) -> list[str]:
    return [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if v is not None]


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and value != value:
            return "nan"
        if isinstance(value, float) and value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    return _toml_value(str(value))


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
