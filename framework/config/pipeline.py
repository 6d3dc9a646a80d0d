"""The pipeline schema: ``[run]``, ``[data]``, ``[model]``, ``[[stage]]``, and the stage graph.

Phase 1 structures the skeleton; each stage's ``do`` is looked up among the
registered stage kinds, its component checked (phase 2, ``components.py``),
and the graph checked: a stage that needs what no earlier stage provides, a
``data`` key naming a set no earlier stage distilled, two stages logging the
same key at the same step.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
from typing import Any

import attrs

from ..errors import ConfigError, ConfigIssue, DuplicateComponentError
from ..params import non_negative
from ..registry import Registry
from .components import ComponentSpec, structure_component, structure_config
from .values import close_match, describe, format_validator

#: keys of a ``[[stage]]`` table that belong to the stage, not to its component
STAGE_RESERVED = ("do", "use", "name", "probes", "data")
#: the ``data`` of a stage that uses the real training set
REAL_DATA = "real"
SYNTHETIC = "synthetic"
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


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
                                        metadata={"doc": "checkpoint epoch loops every N epochs of a stage (0: off)"})
    checkpoint_every_steps: int = attrs.field(
        default=0, validator=non_negative,
        metadata={"doc": "checkpoint step loops (distillers) every N steps of a stage (0: off)"})
    checkpoint_minutes: float = attrs.field(
        default=0.0, validator=non_negative,
        metadata={"doc": "also checkpoint a loop when this many minutes passed since the last checkpoint (0: off)"})
    description: str = attrs.field(default="", metadata={"doc": "free text, logged as the run description"})

    @property
    def checkpointing(self) -> bool:
        """Whether any checkpoint setting is on (then every stage boundary is checkpointed too)."""
        return self.checkpoint_every > 0 or self.checkpoint_every_steps > 0 or self.checkpoint_minutes > 0


def _check_device(value: str) -> None:
    if not DEVICE_PATTERN.match(value):
        raise ValueError(f"'device' must be auto, cpu, mps, cuda or cuda:N: {value!r}")


@attrs.define
class PeriodicProbe:
    """A probe run inside a stage every ``every`` epochs or every ``every_steps`` steps."""

    spec: ComponentSpec
    every: int | None = 1
    every_steps: int | None = None

    def resolved(self) -> dict:
        when = {"every": self.every} if self.every is not None else {"every_steps": self.every_steps}
        return {**when, **self.spec.resolved()}


@attrs.define
class StageSpec:
    """One ``[[stage]]``: what it does, which component, its checked config, and the data it uses."""

    index: int
    do: str
    spec: ComponentSpec
    name: str | None = None
    probes: list[PeriodicProbe] = attrs.field(factory=list)
    #: "real", "synthetic" (the latest distilled set) or "synthetic/<stage name>"
    data: str = REAL_DATA

    @property
    def use(self) -> str:
        return self.spec.name

    @property
    def key(self) -> str:
        """Metric prefix ``<do>/<name or use>``."""
        return f"{self.do}/{self.label}"

    @property
    def label(self) -> str:
        """The stage's name, or its component's when it has none."""
        return self.name or self.use

    @property
    def path(self) -> str:
        return f"$.stage[{self.index}]"

    @property
    def config(self) -> Any:
        return self.spec.config

    def resolved(self) -> dict:
        entry = {"do": self.do, **({"name": self.name} if self.name else {}), **self.spec.resolved()}
        if self.data != REAL_DATA:
            entry["data"] = self.data
        if self.probes:
            entry["probes"] = [p.resolved() for p in self.probes]
        return entry


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
        out["stage"] = [st.resolved() for st in self.stages]
        return out

    def flat_params(self) -> dict[str, str]:
        """Flattened resolved config, e.g. ``stage.0.compression``, for MLflow params."""
        flat: dict[str, str] = {}
        _flatten(self.resolved(), "", flat)
        return flat

    def fingerprint(self) -> str:
        """A hash of what runs (name, description and tracking URI left out): a resume must match it."""
        return fingerprint_resolved(self.resolved())


def fingerprint_resolved(resolved: dict) -> str:
    """:meth:`Pipeline.fingerprint` of an already resolved pipeline."""
    run = {k: v for k, v in resolved.get("run", {}).items() if k not in ("name", "description", "tracking_uri")}
    doc = {**resolved, "run": run}
    text = json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}.{i}", out)
    else:
        out[prefix] = str(value)


TOP_LEVEL = ("run", "data", "model", "stage", "sweep")


def build_pipeline(doc: dict, registry: Registry, file: str = "<string>") -> Pipeline:
    """Check a parsed TOML document; raise one ConfigError listing every problem."""
    issues: list[ConfigIssue] = []
    for key in doc:
        if key not in TOP_LEVEL:
            hint = " ([[stage]] is singular)" if key == "stages" else close_match(key, list(TOP_LEVEL))
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
    stages = StageGraph(registry, issues).build(doc.get("stage", []))
    sweep = doc.get("sweep")
    if sweep is not None and not isinstance(sweep, dict):
        issues.append(ConfigIssue("$.sweep", f"expected a table, got {describe(sweep)}"))
    if not issues and data is not None:
        issues.extend(check_against_data(data, [data, model, *(s.spec for s in stages)]))
    if issues:
        raise ConfigError(issues, file=file)
    return Pipeline(file, run, data, model, stages, doc, sweep)


def check_against_data(data: ComponentSpec, specs: list[ComponentSpec]) -> list[ConfigIssue]:
    """Run every component config's ``check(shape)`` (the dataset's own included) against the dataset's
    :class:`DataShape`.

    The shape comes from the dataset's registration (``shape=``), so nothing is loaded; a dataset that
    does not declare one is not checked here (its components still check themselves when built).
    """
    try:
        shape = data.component.data_shape(data.config)
    except (ValueError, ConfigError) as exc:
        return _check_issues(exc, data.path)
    if shape is None:
        return []
    issues: list[ConfigIssue] = []
    for spec in specs:
        check = getattr(spec.config, "check", None)
        if not callable(check):
            continue
        try:
            check(shape)
        except (ValueError, ConfigError) as exc:
            issues.extend(_check_issues(exc, spec.path))
    return issues


def check_against_stages(spec: ComponentSpec, earlier: list[StageSpec]) -> list[ConfigIssue]:
    """Run a component config's ``check_stages(earlier)`` (the ChecksStages protocol), if it has one.

    For components that depend on what earlier stages ran (a probe comparing earlier attacks), so that
    ``validate`` rejects a reference to a stage that does not exist, as ``run`` would only at the end.
    """
    check = getattr(spec.config, "check_stages", None)
    if not callable(check):
        return []
    try:
        check(earlier)
    except (ValueError, ConfigError) as exc:
        return _check_issues(exc, spec.path)
    return []


def _check_issues(exc: Exception, path: str) -> list[ConfigIssue]:
    if isinstance(exc, ConfigError):
        return list(exc.with_prefix(path).issues)
    name, message = format_validator(exc)
    return [ConfigIssue(f"{path}.{name}" if name else path, message)]


class StageGraph:
    """Builds the ``[[stage]]`` list in order, tracking what earlier stages make available."""

    def __init__(self, registry: Registry, issues: list[ConfigIssue]):
        self.registry = registry
        self.issues = issues
        self.available: set[str] = set()
        self.synthetic_sets: list[str] = []  # "synthetic/<label>" of earlier distilling stages, in order
        self.stages: list[StageSpec] = []

    def build(self, raw_stages: Any) -> list[StageSpec]:
        if not isinstance(raw_stages, list):
            self.issues.append(ConfigIssue("$.stage", "expected an array of tables: write each stage as [[stage]]"))
            return []
        for i, table in enumerate(raw_stages):
            stage = self._stage(i, table)
            if stage is not None:
                self.stages.append(stage)
        return self.stages

    def _stage(self, i: int, table: Any) -> StageSpec | None:
        path = f"$.stage[{i}]"
        issues = self.issues
        if not isinstance(table, dict):
            issues.append(ConfigIssue(path, f"expected a table, got {describe(table)}"))
            return None
        do = table.get("do")
        stage_kind = self.registry.stage_kind(do) if isinstance(do, str) else None
        if stage_kind is None:
            names = [*self.registry.stage_kinds, *self.registry.stage_aliases]
            got = f" (got {do!r})" if do is not None else ""
            issues.append(ConfigIssue(f"{path}.do", f"must be one of {', '.join(names)}{got}"
                                      + (close_match(do, names) if isinstance(do, str) else "")))
            return None
        name = table.get("name")
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            issues.append(ConfigIssue(f"{path}.name", f"expected a non-empty string without '/', got {describe(name)}"))
            name = None
        # `probes` and `data` belong to the stage only where its kind takes them; elsewhere they may be
        # a component's own parameters
        reserved = tuple(k for k in STAGE_RESERVED
                         if not (k == "probes" and not stage_kind.probes)
                         and not (k == "data" and not stage_kind.selects_data))
        spec, sub = structure_component(self.registry, stage_kind.component_kind, table, path, reserved=reserved)
        issues.extend(self._explain_reserved(sub, path, do))
        probes = (self._periodic_probes(table.get("probes", []), f"{path}.probes")
                  if stage_kind.probes else [])
        data = self._data_choice(table.get("data", REAL_DATA), f"{path}.data") if stage_kind.selects_data \
            else REAL_DATA
        if spec is None:
            return None
        if stage_kind.component_kind == "pruner":
            self._check_prune_target(spec, path)
        missing = [r for r in spec.component.requires if r not in self.available]
        if missing:
            issues.append(ConfigIssue(path, f"{spec.kind} {spec.name!r} needs {', '.join(missing)}, which no "
                                            f"earlier stage produces ({self._producers(missing)})"))
        stage = StageSpec(i, do, spec, name, probes, data)  # an alias (evaluate) keeps its own metric prefix
        if len(self.stages) == i:  # after an earlier stage failed to parse, its absence would mislead the check
            issues.extend(check_against_stages(stage.spec, list(self.stages)))
            for periodic in probes:  # a periodic probe runs inside the stage: it comes last
                issues.extend(check_against_stages(periodic.spec, [*self.stages, stage]))
        self.available.update(stage_kind.provides)
        self.available.update(spec.component.provides)
        if SYNTHETIC in stage_kind.provides or SYNTHETIC in spec.component.provides:
            self.synthetic_sets.append(f"{SYNTHETIC}/{stage.label}")
        # two stages may share a key only at different steps: a train stage must lie between them
        clash = next((s for s in self.stages if s.key == stage.key
                      and not any(t.do == "train" and t.index > s.index for t in self.stages)), None)
        if clash is not None and stage.do != "train":
            issues.append(ConfigIssue(f"{path}.name", f"stage {clash.index} already logs {stage.key}/... at the "
                                                      "same step; give this stage a distinct name"))
        return stage

    @staticmethod
    def _explain_reserved(sub: list[ConfigIssue], path: str, do: str) -> list[ConfigIssue]:
        out = []
        for issue in sub:
            if issue.path == f"{path}.probes" and issue.message.startswith("unknown key"):
                issue = ConfigIssue(issue.path, f"do = \"{do}\" stages run no periodic probes; use a separate "
                                                "[[stage]] with do = \"probe\"")
            elif issue.path == f"{path}.data" and issue.message.startswith("unknown key"):
                issue = ConfigIssue(issue.path, f"do = \"{do}\" stages do not choose their data")
            out.append(issue)
        return out

    def _data_choice(self, value: Any, path: str) -> str:
        if value == REAL_DATA:
            return REAL_DATA
        if not isinstance(value, str):
            self.issues.append(ConfigIssue(path, f"expected \"real\", \"synthetic\" or \"synthetic/<stage name>\", "
                                                 f"got {describe(value)}"))
            return REAL_DATA
        if value == SYNTHETIC:
            if not self.synthetic_sets:
                self.issues.append(ConfigIssue(path, "no earlier stage distills a synthetic set; add a "
                                                     "do = \"distill\" stage before this one, or remove `data`"))
            return value
        if value in self.synthetic_sets:
            return value
        known = ", ".join(repr(s) for s in self.synthetic_sets) or "none (no earlier distill stage)"
        self.issues.append(ConfigIssue(path, f"unknown dataset {value!r}{close_match(value, self.synthetic_sets)}; "
                                             f"write \"real\", \"synthetic\" (the latest distilled set) or one of "
                                             f"the sets distilled earlier: {known}"))
        return REAL_DATA

    def _check_prune_target(self, spec: ComponentSpec, path: str) -> None:
        target = spec.config.target
        try:
            found = self.registry.find("prune-target", target)
        except DuplicateComponentError as exc:
            self.issues.append(ConfigIssue(f"{path}.target", str(exc)))
        else:
            if found is None:
                self.issues.append(ConfigIssue(f"{path}.target", self.registry.unknown_message("prune-target", target)))

    def _producers(self, needs: list[str]) -> str:
        makers = {v: k.name for k in self.registry.stage_kinds.values() for v in k.provides}
        return "; ".join(f"add a do = \"{makers[n]}\" stage before it" if n in makers
                         else f"add a stage that provides {n!r}" for n in needs)

    def _periodic_probes(self, raw: Any, path: str) -> list[PeriodicProbe]:
        if not isinstance(raw, list):
            self.issues.append(ConfigIssue(path, "expected an array of inline tables, e.g. "
                                                 "probes = [{ use = \"accuracy\", every = 1 }]"))
            return []
        out = []
        for j, table in enumerate(raw):
            ppath = f"{path}[{j}]"
            when = self._probe_schedule(table, ppath)
            if when is None:
                continue
            spec, sub = structure_component(self.registry, "probe", table, ppath,
                                            reserved=("use", "every", "every_steps"))
            self.issues.extend(sub)
            if spec is not None:
                out.append(PeriodicProbe(spec, *when))
        return out

    def _probe_schedule(self, table: Any, path: str) -> tuple[int | None, int | None] | None:
        if not isinstance(table, dict):
            return 1, None  # structure_component reports the bad entry
        if "every" in table and "every_steps" in table:
            self.issues.append(ConfigIssue(f"{path}.every_steps", "give `every` (epochs) or `every_steps`, not both"))
            return None
        key = "every_steps" if "every_steps" in table else "every"
        value = table.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.issues.append(ConfigIssue(f"{path}.{key}", f"must be an integer >= 1 (got {value!r})"))
            return None
        return (None, value) if key == "every_steps" else (value, None)
