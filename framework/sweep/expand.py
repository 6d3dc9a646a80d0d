"""From one pipeline document and its ``[sweep]`` to checked, hashed points.

Every point is built into a full :class:`deepscope.config.Pipeline` before
anything runs, so one bad combination fails the whole sweep up front, with the
point named. A point's hash is computed on its *resolved* config (every default
filled in; the run name, description and tracking URI left out), so the same
experiment written two ways is recognized as the same point.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import attrs

from ..config import Pipeline, build_pipeline
from ..errors import ConfigError, ConfigIssue
from ..registry import Registry
from .spec import SweepSpec, canonical, parse_sweep


@attrs.define
class SweepPoint:
    """One combination of swept values and the pipeline it makes."""

    index: int
    values: dict[str, Any]
    pipeline: Pipeline
    hash: str

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.values.items())


def set_dotted(doc: dict, key: str, value: Any) -> None:
    """Set ``stage.0.lr`` (or ``run.seed``, ``stage.1.attack.eps``) inside a parsed TOML document."""
    parts = key.split(".")
    node: Any = doc
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def combinations(spec: SweepSpec) -> list[dict[str, Any]]:
    """The grid's cross product times each zip group, minus exclusions, in a stable order."""
    axes: list[list[dict[str, Any]]] = [[{key: v} for v in values] for key, values in spec.grid.items()]
    for group in spec.zip:
        keys = list(group)
        axes.append([dict(zip(keys, row)) for row in zip(*(group[k] for k in keys))])
    points = []
    for combo in itertools.product(*axes):
        values: dict[str, Any] = {}
        for part in combo:
            values.update(part)
        ordered = {k: values[k] for k in spec.keys}
        if not any(_matches(ordered, rule) for rule in spec.exclude):
            points.append(ordered)
    return points


def _matches(values: dict[str, Any], rule: dict[str, Any]) -> bool:
    return all(canonical(values[k]) == canonical(v) for k, v in rule.items())


def point_run_name(base: str, values: dict[str, Any]) -> str:
    return base + " [" + ", ".join(f"{k}={v}" for k, v in values.items()) + "]"


def point_hash(pipeline: Pipeline) -> str:
    return pipeline.fingerprint()


def expand_sweep(doc: dict, registry: Registry, file: str = "<string>",
                 spec: SweepSpec | None = None) -> tuple[SweepSpec, list[SweepPoint]]:
    """Check the sweep and every point; raise one ConfigError naming each bad point."""
    base = {k: v for k, v in doc.items() if k != "sweep"}
    if spec is None:
        spec = parse_sweep(doc.get("sweep"), base, registry, file)
    points: list[SweepPoint] = []
    issues: list[ConfigIssue] = []
    seen: dict[str, int] = {}
    for index, values in enumerate(combinations(spec)):
        point_doc = copy.deepcopy(base)
        for key, value in values.items():
            set_dotted(point_doc, key, value)
        run = point_doc.get("run")
        if isinstance(run, dict) and "run.name" not in values and isinstance(run.get("name"), str):
            run["name"] = point_run_name(run["name"], values)
        label = ", ".join(f"{k}={v!r}" for k, v in values.items())
        try:
            pipeline = build_pipeline(point_doc, registry, file=file)
        except ConfigError as exc:
            issues.extend(ConfigIssue(f"sweep point {index} ({label}): {i.path}" if i.path else
                                      f"sweep point {index} ({label})", i.message) for i in exc.issues)
            continue
        digest = point_hash(pipeline)
        if digest in seen:
            issues.append(ConfigIssue(f"sweep point {index} ({label})", f"runs the same resolved config as point "
                                                                        f"{seen[digest]} (hash {digest})"))
            continue
        seen[digest] = index
        points.append(SweepPoint(index, values, pipeline, digest))
    if issues:
        raise ConfigError(issues, file=file)
    return spec, points

