"""``deepscope sweep collect --by``: group a sweep's points by some keys, aggregate metrics over the rest.

A sweep over pruner x compression x seed is read as "accuracy (mean, std over
seeds) per pruner and compression". Only FINISHED points that logged the
metric count; ``count`` says how many did, so a group missing a seed shows.
Infinite values (a disconnected network's compression) are counted apart.
The standard deviation is the sample one (n - 1 in the denominator), empty for
a group of one point. Pure Python: no torch, no MLflow.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

from ..config.values import close_match
from ..errors import DeepscopeError


@dataclass
class CollectSpec:
    """What to aggregate: group keys, metrics, and the key on the plot's x axis (None: no plot)."""

    by: list[str]
    metrics: list[str]
    x: str | None = None
    log_x: bool = False
    log_y: bool = False


@dataclass
class Group:
    """One combination of the group keys and, per metric, the values of its finished points."""

    key: tuple
    values: dict[str, list[float]] = field(default_factory=dict)


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for fewer than two values)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def check_spec(spec: CollectSpec, keys: list[str], table: list[dict[str, Any]]) -> None:
    """Raise a DeepscopeError naming the option and the choices when a key or metric is unknown."""
    for key in spec.by:
        if key not in keys:
            raise DeepscopeError(f"collect --by {key!r}: not a swept key of this sweep{close_match(key, keys)}; "
                                 f"the swept keys are {', '.join(keys)}")
    if len(set(spec.by)) != len(spec.by):
        raise DeepscopeError(f"collect --by names a key twice ({', '.join(spec.by)})")
    if spec.x is not None and spec.x not in spec.by:
        raise DeepscopeError(f"collect --x {spec.x!r}: the plot's x axis must be one of the --by keys "
                             f"({', '.join(spec.by)}); add it to --by")
    if not spec.metrics:
        raise DeepscopeError("collect --by needs a metric: pass --metric NAME (or set [sweep] metrics)")
    logged = sorted({m for r in table for m in r["metrics"]})
    for metric in spec.metrics:
        if metric not in logged:
            hint = close_match(metric, logged) or (f"; the points logged {', '.join(logged[:8])}"
                                                   f"{' ...' if len(logged) > 8 else ''}" if logged
                                                   else "; no point has finished with metrics yet")
            raise DeepscopeError(f"collect --metric {metric!r}: no finished point logged it{hint}")


def group_points(spec: CollectSpec, table: list[dict[str, Any]]) -> list[Group]:
    """Groups in the order their first point appears; only FINISHED points with the metric contribute."""
    groups: dict[tuple, Group] = {}
    for row in table:
        key = tuple(row.get(k) for k in spec.by)
        group = groups.setdefault(_hashable(key), Group(key, {m: [] for m in spec.metrics}))
        if row["status"] != "FINISHED":
            continue
        for metric in spec.metrics:
            value = row["metrics"].get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                group.values[metric].append(float(value))
    return list(groups.values())


def summary_rows(spec: CollectSpec, groups: list[Group]) -> list[dict[str, Any]]:
    """One dict per group: the group keys, then ``<metric>/mean``, ``/std``, ``/count`` and ``/infinite``.

    Mean, std and count are over the finite values; ``infinite`` counts the others (a pruned network that
    is fully disconnected has an infinite effective compression): one such seed must not turn the group's
    mean into infinity, nor vanish from the table.
    """
    out = []
    for group in groups:
        row: dict[str, Any] = dict(zip(spec.by, group.key))
        for metric in spec.metrics:
            finite = [v for v in group.values[metric] if math.isfinite(v)]
            mean, std = mean_std(finite) if finite else (None, None)
            row[f"{metric}/mean"], row[f"{metric}/std"], row[f"{metric}/count"] = mean, std, len(finite)
            row[f"{metric}/infinite"] = len(group.values[metric]) - len(finite)
        out.append(row)
    return out


def columns(spec: CollectSpec, rows: list[dict[str, Any]] = ()) -> list[str]:
    """The summary's columns; ``<metric>/infinite`` only for a metric with a non-finite value in ``rows``."""
    out = list(spec.by)
    for m in spec.metrics:
        out += [f"{m}/mean", f"{m}/std", f"{m}/count"]
        if any(row.get(f"{m}/infinite") for row in rows):
            out.append(f"{m}/infinite")
    return out


def summary_csv(spec: CollectSpec, rows: list[dict[str, Any]]) -> str:
    """The summary as CSV; missing means and stds are empty cells, floats in full precision."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    cols = columns(spec, rows)
    writer.writerow(cols)
    for row in rows:
        writer.writerow(["" if row[c] is None else repr(row[c]) if isinstance(row[c], float) else row[c]
                         for c in cols])
    return buf.getvalue()


def _hashable(key: tuple) -> tuple:
    """A dict key that tells 1 from 1.0 from true, and accepts list values."""
    return tuple((type(v).__name__, repr(v)) for v in key)
