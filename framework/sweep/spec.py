"""The ``[sweep]`` table of a pipeline file, checked like the rest of the pipeline.

Shape::

    [sweep]
    executor = "local"          # inline | local | slurm | any registered executor
    workers = 2                 # parallel points (local: processes; slurm: array parallelism)
    metrics = ["attack/pgd/robust_acc"]   # columns of `deepscope sweep status`

    [sweep.grid]                # the cross product of these lists
    "stage.0.compression" = [10, 100, 1000]
    "run.seed" = [0, 1, 2]

    [[sweep.zip]]               # lists that vary together: one axis of the product
    "stage.0.lr" = [0.1, 0.01]
    "stage.0.epochs" = [5, 20]

    [[sweep.exclude]]           # drop every point that matches all of these values
    "stage.0.compression" = 1000
    "run.seed" = 2

    [sweep.collect]             # what `deepscope sweep collect DIR` aggregates and plots
    by = ["stage.0.use", "stage.0.compression"]   # group keys (the rest, e.g. run.seed, is averaged)
    metrics = ["test/acc"]
    x = "stage.0.compression"   # plot against this key, one line per value of the other by-keys
    log_x = true

    [sweep.slurm]               # the chosen executor's own table (its registered config class)
    partition = "gpu"

Keys are dotted paths into the pipeline: ``run.seed``, ``model.hidden``,
``stage.<index>.<param>``. Problems are reported together, each with its
location, e.g. ``file: $.sweep.grid."stage.0.compression": ...``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

from ..config import close_match as _close, describe as _describe, structure_config
from ..errors import ConfigError, ConfigIssue
from ..registry import Registry

SWEEPABLE_TABLES = ("run", "data", "model", "stage")
KEYS = ("executor", "workers", "grid", "zip", "exclude", "metrics", "name", "dir", "collect")
COLLECT_KEYS = ("by", "metrics", "x", "log_x", "log_y")


@attrs.define
class SweepSpec:
    """A checked ``[sweep]`` table."""

    executor: str = "local"
    workers: int | None = None
    grid: dict[str, list] = attrs.field(factory=dict)
    zip: list[dict[str, list]] = attrs.field(factory=list)
    exclude: list[dict[str, Any]] = attrs.field(factory=list)
    metrics: list[str] = attrs.field(factory=list)
    name: str | None = None
    dir: str | None = None
    executor_config: Any = None
    collect: dict[str, Any] = attrs.field(factory=dict)

    @property
    def keys(self) -> list[str]:
        """Every swept key, grid keys first, in file order."""
        return [*self.grid, *(k for group in self.zip for k in group)]


def quote_key(key: str) -> str:
    """``stage.0.lr`` -> ``"stage.0.lr"``: how a dotted key appears inside a key path."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def canonical(value: Any) -> str:
    """A text form that tells 1 from 1.0 from true (for duplicates and exclusions)."""
    return json.dumps([type(value).__name__ if isinstance(value, bool) else "", value], sort_keys=True)


def check_key_path(key: str, doc: dict) -> str | None:
    """Why ``key`` cannot name a place in ``doc`` (None when it can)."""
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        return ("must be a dotted path into the pipeline such as run.seed, model.hidden or "
                "stage.0.lr")
    if parts[0] not in SWEEPABLE_TABLES:
        return f"must start with one of {', '.join(SWEEPABLE_TABLES)}{_close(parts[0], list(SWEEPABLE_TABLES))}"
    node: Any = doc.get(parts[0])
    for depth, part in enumerate(parts[1:], start=1):
        where = ".".join(parts[:depth])
        if isinstance(node, list):
            if not part.isdigit():
                return f"{where} is an array: the next part must be an index (got {part!r})"
            if int(part) >= len(node):
                return f"there is no {where}.{part}: the pipeline has {len(node)} [[{parts[0]}]] entries"
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.get(part)
        elif node is None and depth < len(parts):
            if parts[0] == "stage" and depth == 1:
                return "the pipeline has no [[stage]]"
            node = None  # a new nested table: the point's validation checks the key itself
        else:
            return f"{where} is a value ({_describe(node)}), not a table"
    return None


def _value_list(raw: Any, path: str, issues: list[ConfigIssue]) -> list | None:
    if not isinstance(raw, list) or not raw:
        issues.append(ConfigIssue(path, f"expected a non-empty array of values, got {_describe(raw)}"))
        return None
    seen: dict[str, int] = {}
    for i, value in enumerate(raw):
        text = canonical(value)
        if text in seen:
            issues.append(ConfigIssue(path, f"value {value!r} appears twice (positions {seen[text]} and {i})"))
            return None
        seen[text] = i
    return list(raw)


def _key_issue(key: str, doc: dict, path: str, taken: set[str], issues: list[ConfigIssue]) -> bool:
    if key in taken:
        issues.append(ConfigIssue(path, "this key is swept twice (grid and zip keys must be distinct)"))
        return False
    why = check_key_path(key, doc)
    if why:
        issues.append(ConfigIssue(path, why))
        return False
    taken.add(key)
    return True


def parse_sweep(table: Any, doc: dict, registry: Registry, file: str = "<string>") -> SweepSpec:
    """Check ``[sweep]`` against the pipeline document ``doc``; raise one ConfigError listing every problem."""
    issues: list[ConfigIssue] = []
    if not isinstance(table, dict):
        raise ConfigError([ConfigIssue("$.sweep", f"expected a table, got {_describe(table)}")], file=file)
    executors = registry.names("executor")
    for key, value in table.items():
        if key not in KEYS and not (isinstance(value, dict) and registry.find("executor", key)):
            issues.append(ConfigIssue(f"$.sweep.{quote_key(key)}", "unknown key" + _close(key, [*KEYS, *executors])
                                      + f"; allowed: {', '.join(KEYS)} and a table per executor "
                                        f"({', '.join(executors)})"))
    spec = SweepSpec()
    executor = table.get("executor", "local")
    if not isinstance(executor, str):
        issues.append(ConfigIssue("$.sweep.executor", f"expected a string, got {_describe(executor)}"))
    elif registry.find("executor", executor) is None:
        issues.append(ConfigIssue("$.sweep.executor", registry.unknown_message("executor", executor)))
    else:
        spec.executor = registry.find("executor", executor).name
    workers = table.get("workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        issues.append(ConfigIssue("$.sweep.workers", f"must be an integer >= 1 (got {workers!r})"))
    else:
        spec.workers = workers
    for key in ("name", "dir"):
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            issues.append(ConfigIssue(f"$.sweep.{key}", f"expected a string, got {_describe(value)}"))
        else:
            setattr(spec, key, value)
    metrics = table.get("metrics", [])
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        issues.append(ConfigIssue("$.sweep.metrics", "expected an array of metric names, e.g. "
                                                     "[\"attack/pgd/robust_acc\"]"))
    else:
        spec.metrics = list(metrics)

    taken: set[str] = set()
    grid = table.get("grid", {})
    if not isinstance(grid, dict):
        issues.append(ConfigIssue("$.sweep.grid", "expected a table of dotted keys, each with an array of values"))
        grid = {}
    for key, raw in grid.items():
        path = f"$.sweep.grid.{quote_key(key)}"
        values = _value_list(raw, path, issues)
        if _key_issue(key, doc, path, taken, issues) and values is not None:
            spec.grid[key] = values
    zips = _table_list(table, "zip", "expected [[sweep.zip]] tables of equally long arrays", issues)
    for i, group in enumerate(zips):
        gpath = f"$.sweep.zip[{i}]"
        if not isinstance(group, dict) or not group:
            issues.append(ConfigIssue(gpath, "expected a table of dotted keys, each with an array of values"))
            continue
        lengths = {k: len(v) for k, v in group.items() if isinstance(v, list)}
        checked = {}
        for key, raw in group.items():
            path = f"{gpath}.{quote_key(key)}"
            if isinstance(raw, list) and len(set(lengths.values())) > 1:
                issues.append(ConfigIssue(path, f"zipped arrays must have the same length (got "
                                                f"{', '.join(f'{k}: {n}' for k, n in lengths.items())})"))
                continue
            values = _value_list(raw, path, issues)
            if _key_issue(key, doc, path, taken, issues) and values is not None:
                checked[key] = values
        if len(checked) == len(group):
            spec.zip.append(checked)
    excludes = _table_list(table, "exclude", "expected [[sweep.exclude]] tables of dotted key = value", issues)
    for i, rule in enumerate(excludes):
        rpath = f"$.sweep.exclude[{i}]"
        if not isinstance(rule, dict) or not rule:
            issues.append(ConfigIssue(rpath, "expected a table of dotted key = value"))
            continue
        unknown = [k for k in rule if k not in taken]
        for key in unknown:
            issues.append(ConfigIssue(f"{rpath}.{quote_key(key)}", "not a swept key; exclusions name grid or "
                                                                    f"zip keys ({', '.join(sorted(taken))})"))
        if not unknown:
            spec.exclude.append(dict(rule))
    if not taken and not issues:
        issues.append(ConfigIssue("$.sweep.grid", "nothing to sweep: add [sweep.grid] or [[sweep.zip]]"))
    if "collect" in table:
        spec.collect = _collect_table(table["collect"], taken, issues)

    if spec.executor and registry.find("executor", spec.executor) is not None:
        comp = registry.find("executor", spec.executor)
        own = table.get(comp.name, {})
        path = f"$.sweep.{quote_key(comp.name)}"
        if comp.config_cls is not None and isinstance(own, dict):
            config, sub = structure_config(comp.config_cls, own, path, what=f"executor {comp.name!r}")
            issues.extend(sub)
            spec.executor_config = config
        elif own:
            issues.append(ConfigIssue(path, f"executor {comp.name!r} takes no parameters"))
    if issues:
        raise ConfigError(issues, file=file)
    return spec


def _collect_table(raw: Any, taken: set[str], issues: list[ConfigIssue]) -> dict[str, Any]:
    """Check ``[sweep.collect]``: by-keys are swept keys, x is one of them, metrics are names."""
    path = "$.sweep.collect"
    if not isinstance(raw, dict):
        issues.append(ConfigIssue(path, f"expected a table (by, metrics, x, log_x, log_y), got {_describe(raw)}"))
        return {}
    for key in raw:
        if key not in COLLECT_KEYS:
            issues.append(ConfigIssue(f"{path}.{quote_key(key)}", "unknown key" + _close(key, list(COLLECT_KEYS))
                                      + f"; allowed: {', '.join(COLLECT_KEYS)}"))
    by = raw.get("by", [])
    if not isinstance(by, list) or not all(isinstance(k, str) for k in by):
        issues.append(ConfigIssue(f"{path}.by", "expected an array of swept keys, e.g. [\"stage.0.lr\"]"))
        by = []
    if not by and not raw.get("metrics"):
        issues.append(ConfigIssue(f"{path}.by", "name the swept keys to group by, e.g. [\"stage.0.lr\"], or give "
                                                "`metrics` alone to aggregate over every point"))
    for key in by:
        if key not in taken:
            issues.append(ConfigIssue(f"{path}.by", f"{key!r} is not a swept key{_close(key, sorted(taken))}; "
                                                    f"the swept keys are {', '.join(sorted(taken))}"))
    metrics = raw.get("metrics", [])
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        issues.append(ConfigIssue(f"{path}.metrics", "expected an array of metric names"))
    x = raw.get("x")
    if x is not None and x not in by:
        issues.append(ConfigIssue(f"{path}.x", f"the plot's x axis must be one of the by keys (got {x!r}); "
                                               "add it to by"))
    for key in ("log_x", "log_y"):
        if key in raw and not isinstance(raw[key], bool):
            issues.append(ConfigIssue(f"{path}.{key}", f"expected true or false, got {_describe(raw[key])}"))
    return dict(raw)


def _table_list(table: dict, key: str, expected: str, issues: list) -> list:
    """``[sweep.KEY]`` or ``[[sweep.KEY]]`` as a list of tables (a wrong shape is an issue)."""
    value = table.get(key, [])
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        issues.append(ConfigIssue(f"$.sweep.{key}", expected))
        return []
    return value
