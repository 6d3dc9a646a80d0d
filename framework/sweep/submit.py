"""``deepscope sweep FILE``: expand, validate, record, prepare the store, hand to the executor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from ..config import dump_toml, read_pipeline_file
from ..errors import ConfigError, DeepscopeError
from .expand import SweepPoint, expand_sweep
from .record import TERMINAL, SweepRecord
from .spec import SweepSpec
from .store import finish_parent, prepare_store, with_busy_timeout


@attrs.define
class SweepPlan:
    """A checked sweep: its spec, its points and where it will be recorded."""

    file: str
    doc: dict
    spec: SweepSpec
    points: list[SweepPoint]
    directory: Path
    name: str


def plan_sweep(file: str | Path, registry: Any, directory: str | Path | None = None) -> SweepPlan:
    path = Path(file)
    doc = read_pipeline_file(path)
    if "sweep" not in doc:
        raise ConfigError("no [sweep] table: add one with [sweep.grid] (see docs/sweeps.md), or run the file "
                          "with `deepscope run`", file=str(path))
    spec, points = expand_sweep(doc, registry, file=str(path))
    run = doc.get("run", {})
    name = spec.name or str(run.get("name", path.stem))
    where = Path(directory or spec.dir or Path("sweeps") / _slug(name))
    return SweepPlan(str(path), doc, spec, points, where, name)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-") or "sweep"


def submit_sweep(plan: SweepPlan, host: Any, *, force: bool = False, tracking_uri: str | None = None,
                 workers: int | None = None, console: Any = None) -> tuple[SweepRecord, list[str], list[str]]:
    """Record every point, create the store and parent run, and start the points not yet FINISHED.

    Returns (record, hashes started, hashes skipped).
    """
    from ..tracking import resolve_tracking_uri
    from .executors import Submission

    base_run = plan.doc.get("run", {})
    uri = with_busy_timeout(resolve_tracking_uri(tracking_uri or base_run.get("tracking_uri")))
    directory = plan.directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    existing = directory / "sweep.json"
    if existing.exists():
        old = SweepRecord.open(directory)
        if old.data.get("tracking_uri") != uri:
            raise DeepscopeError(f"{directory} records a sweep tracked in {old.data.get('tracking_uri')}, not {uri}; "
                                 "use the same --tracking-uri, or another --dir")
    record = SweepRecord.create_or_open(directory, name=plan.name, file=str(Path(plan.file).resolve()),
                                        executor=plan.spec.executor, workers=workers or plan.spec.workers,
                                        tracking_uri=uri, experiment=str(base_run.get("experiment", "deepscope")),
                                        keys=plan.spec.keys, metrics=plan.spec.metrics,
                                        collect=plan.spec.collect)
    for point in plan.points:
        record.add_point(point.hash, point.index, point.values, dump_toml(point.pipeline.resolved()))
    executor = host.registry.get("executor", plan.spec.executor).build(plan.spec.executor_config)
    detaches = getattr(executor, "detaches", False)
    to_run, skipped = [], []
    for point in plan.points:
        status = record.status(point.hash).get("status")
        in_flight = detaches and status in ("SUBMITTED", "RUNNING")  # still queued or running on the cluster
        if (status == "FINISHED" or in_flight) and not force:
            skipped.append(point.hash)
            continue
        if force:
            record.status_path(point.hash).unlink(missing_ok=True)
        to_run.append(point.hash)
    experiments = [p.pipeline.run.experiment for p in plan.points]
    tags = {"deepscope.sweep": "parent", "deepscope.sweep.dir": str(directory), "deepscope.file": plan.file,
            "deepscope.sweep.points": str(len(plan.points)), "deepscope.sweep.executor": plan.spec.executor}
    record.data["parent_run_id"] = prepare_store(uri, experiments, record.data["experiment"], f"sweep {plan.name}",
                                                 tags, parent_run_id=record.data.get("parent_run_id"))
    record.data.pop("parent_status", None)
    record.save()
    if to_run:
        submission = Submission(record, to_run, workers or plan.spec.workers, host, console)
        try:
            executor.submit(submission)
        except KeyboardInterrupt:
            record.save()
            finalize(record)  # the parent run ends KILLED once every point has an end
            raise
        record.save()
        if not detaches:
            finalize(record)
    else:
        finalize(record)
    return record, to_run, skipped


def finalize(record: SweepRecord) -> str | None:
    """End the parent run once every point is FINISHED, FAILED or KILLED; None while some still run."""
    statuses = [record.status(h).get("status") for h in record.points]
    if not statuses or any(s not in TERMINAL for s in statuses):
        return None
    if record.data.get("parent_status"):
        return record.data["parent_status"]
    status = finish_parent(record.data["tracking_uri"], record.data["parent_run_id"], statuses)
    record.data["parent_status"] = status
    record.save()
    return status
