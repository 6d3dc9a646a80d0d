"""``deepscope sweep status`` and ``collect``: points, their status and chosen metrics, and a CSV.

Both read the sweep directory (no MLflow), so they are quick on a login node; for a slurm
sweep they also ask the scheduler about the points not yet FINISHED (``deepscope.sweep.slurm``),
show its state and reason, and mark points SLURM ended before they could. Once every point has
ended they also close the parent run.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from .record import SweepRecord

STATUS_STYLE = {"FINISHED": "green", "FAILED": "red", "KILLED": "red", "RUNNING": "yellow"}


def rows(record: SweepRecord) -> list[dict[str, Any]]:
    """One dict per point: index, hash, each swept key, status, run_id, job_id and every final metric."""
    out = []
    scheduler = _scheduler_labels(record)
    for digest, point in record.ordered():
        status = record.status(digest)
        row: dict[str, Any] = {"point": point["index"], "hash": digest}
        row.update(point.get("values", {}))
        row["status"] = status.get("status", "PENDING")
        row["run_id"] = status.get("run_id") or ""
        row["job_id"] = status.get("job_id") or point.get("job_id") or ""
        row["metrics"] = status.get("metrics") or {}
        if digest in scheduler:
            row["scheduler"] = scheduler[digest]
        out.append(row)
    return out


def _scheduler_labels(record: SweepRecord) -> dict[str, str]:
    """SLURM's view (``PENDING (Resources)``, ``REQUEUED``...) of a slurm sweep's unfinished points."""
    if record.data.get("executor") != "slurm":
        return {}
    from .slurm import reconcile

    return reconcile(record)


def chosen_metrics(record: SweepRecord, table: list[dict[str, Any]], limit: int = 4) -> list[str]:
    """``[sweep] metrics`` if given, else the first few metrics every finished point has."""
    if record.data.get("metrics"):
        return list(record.data["metrics"])
    finished = [r["metrics"] for r in table if r["metrics"]]
    if not finished:
        return []
    common = set(finished[0]).intersection(*finished[1:])
    return sorted(common, key=lambda k: (k.count("/"), k))[:limit]


def counts(table: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in table:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


def to_csv(record: SweepRecord, table: list[dict[str, Any]]) -> str:
    """Every point with its values, status, ids and all final metrics (one column per metric)."""
    keys = list(record.data.get("keys", []))
    metric_keys = sorted({k for r in table for k in r["metrics"]})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["point", "hash", *keys, "status", "run_id", "job_id", *metric_keys])
    for r in table:
        writer.writerow([r["point"], r["hash"], *[r.get(k, "") for k in keys], r["status"], r["run_id"],
                         r["job_id"], *[r["metrics"].get(m, "") for m in metric_keys]])
    return buf.getvalue()


def render(record: SweepRecord, table: list[dict[str, Any]], console: Any, title: str) -> None:
    from rich.table import Table

    keys = list(record.data.get("keys", []))
    metrics = chosen_metrics(record, table)
    view = Table(title=title)
    for col in ("point", *keys, "status", "run", "job", *metrics):
        view.add_column(col, justify="right" if col in metrics else "left")
    for r in table:
        style = STATUS_STYLE.get(r["status"], "")
        status = f"[{style}]{r['status']}[/]" if style else r["status"]
        if r.get("scheduler") and r["scheduler"] != r["status"]:  # e.g. SUBMITTED: PENDING (PartitionConfig)
            status += f": slurm {r['scheduler']}"
        values = []
        for m in metrics:
            v = r["metrics"].get(m)
            values.append(f"{v:.4f}" if isinstance(v, float) else "")
        view.add_row(str(r["point"]), *[str(r.get(k, "")) for k in keys], status, r["run_id"][:8],
                     str(r["job_id"]), *values)
    console.print(view)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts(table).items()))
    console.print(f"{len(table)} points: {summary}. Store: {record.data.get('tracking_uri')} "
                  f"(parent run {record.data.get('parent_run_id')})")
