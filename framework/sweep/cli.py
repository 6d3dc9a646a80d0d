"""``deepscope sweep`` (and ``deepscope run --resume``), added to the CLI by ``register_cli``.

    deepscope sweep FILE [--dir DIR] [--force] [--workers N] [--tracking-uri URI] [--dry-run]
    deepscope sweep status DIR
    deepscope sweep collect DIR [--csv] [--by KEY,...] [--metric NAME] [--x KEY] [--log-x] [--log-y]

Bad input raises :class:`deepscope.errors.DeepscopeError` (exit 2); a sweep
with failed points exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..cli_support import console_for as _console, default_host as _host, results_console
from ..errors import DeepscopeError

USAGE = "FILE | status DIR | collect DIR"


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("sweep", help="run a pipeline's [sweep] grid; `sweep status DIR`, `sweep collect DIR`",
                              usage="deepscope sweep FILE [options] | sweep status DIR | sweep collect DIR [--csv]",
                              description="deepscope sweep FILE submits every point of the file's [sweep]; "
                                          "deepscope sweep status DIR and deepscope sweep collect DIR reattach.")
    p.add_argument("target", nargs="+", metavar="ARG", help=USAGE)
    p.add_argument("--dir", help="sweep directory (default: [sweep] dir, else sweeps/<name>)")
    p.add_argument("--force", action="store_true", help="rerun points that already FINISHED")
    p.add_argument("--workers", type=int, help="parallel points (overrides [sweep] workers)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: [run] tracking_uri, "
                                          "MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the points; run nothing")
    p.add_argument("--csv", action="store_true", help="collect: print the CSV instead of a table")
    p.add_argument("--by", action="append", metavar="KEY[,KEY]",
                   help="collect: group points by these swept keys and aggregate the metrics over the other "
                        "keys (mean, std, count); default: [sweep.collect] by")
    p.add_argument("--metric", action="append", metavar="NAME",
                   help="collect --by: a metric to aggregate (repeatable; default: [sweep.collect] metrics, "
                        "else [sweep] metrics)")
    p.add_argument("--x", metavar="KEY", help="collect --by: plot the metrics against this --by key, one line per "
                                              "value of the other --by keys (default: [sweep.collect] x)")
    p.add_argument("--log-x", action="store_true", default=None, help="collect --x: logarithmic x axis")
    p.add_argument("--log-y", action="store_true", default=None, help="collect --x: logarithmic y axis")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    target = args.target
    if target[0] in ("status", "collect") and len(target) == 2 and not Path(target[0]).is_file():
        return cmd_status(args, Path(target[1]), collect=target[0] == "collect")
    if len(target) != 1:
        raise DeepscopeError(f"usage: deepscope sweep {USAGE} (got {' '.join(target)})")
    if args.workers is not None and args.workers < 1:
        raise DeepscopeError(f"--workers must be >= 1 (got {args.workers})")
    from .submit import plan_sweep, submit_sweep

    console = _console(args)
    host = _host()
    plan = plan_sweep(target[0], host.registry, args.dir)
    if args.dry_run:
        from rich.table import Table

        view = Table(title=f"{len(plan.points)} points of {plan.file} (executor {plan.spec.executor})")
        for col in ("point", "hash", *plan.spec.keys):
            view.add_column(col)
        for p in plan.points:
            view.add_row(str(p.index), p.hash, *[repr(p.values[k]) for k in plan.spec.keys])
        console.print(view)
        return 0
    record, started, skipped = submit_sweep(plan, host, force=args.force, tracking_uri=args.tracking_uri,
                                            workers=args.workers, console=console)
    if skipped:
        console.print(f"{len(skipped)} points already FINISHED (or still queued on a cluster) were skipped "
                      "(--force reruns them)")
    from .report import render, rows

    table = rows(record)  # the sweep's result, like run's table: stdout
    render(record, table, results_console(args), f"sweep {record.data['name']} ({record.dir})")
    failed = [r for r in table if r["status"] in ("FAILED", "KILLED", "PENDING")]
    return 1 if failed else 0


def cmd_status(args: argparse.Namespace, directory: Path, *, collect: bool) -> int:
    from .record import SweepRecord
    from .report import render, rows, to_csv
    from .submit import finalize

    record = SweepRecord.open(directory)
    table = rows(record)
    finalize(record)
    if collect:
        text = to_csv(record, table)
        (record.dir / "results.csv").write_text(text, encoding="utf-8")
        spec = collect_spec(args, record, table)
        if spec is not None:
            return cmd_collect_summary(args, record, table, spec)
        if args.csv:
            sys.stdout.write(text)
            return 0
    render(record, table, results_console(args), f"sweep {record.data.get('name')} ({record.dir})")
    if collect:
        _console(args).print(f"CSV of every point and metric: {record.dir / 'results.csv'}")
    return 0


def collect_spec(args: argparse.Namespace, record: Any, table: list) -> Any:
    """The grouping asked for by the flags, else by the sweep's [sweep.collect]; None for neither."""
    from .aggregate import CollectSpec, check_spec

    saved = record.data.get("collect") or {}
    by = [k for item in (args.by or []) for k in item.split(",") if k] or list(saved.get("by", []))
    if not by:
        for flag in ("x", "log_x", "log_y"):
            if getattr(args, flag) not in (None, False):
                raise DeepscopeError(f"collect --{flag.replace('_', '-')} needs --by KEY (the keys to group by)")
        if not args.metric and "metrics" not in saved:
            return None  # the status table
        # --metric (or [sweep.collect] metrics) without --by: one group, every point (e.g. a sweep over seeds only)
    metrics = args.metric or list(saved.get("metrics") or record.data.get("metrics") or [])
    x = args.x if args.x is not None else saved.get("x")
    spec = CollectSpec(by, metrics, x, bool(args.log_x if args.log_x is not None else saved.get("log_x", False)),
                       bool(args.log_y if args.log_y is not None else saved.get("log_y", False)))
    check_spec(spec, list(record.data.get("keys", [])), table)
    return spec


def cmd_collect_summary(args: argparse.Namespace, record: Any, table: list, spec: Any) -> int:
    """Write summary.csv (and summary.png with --x), log them to the parent run, print the table."""
    from .aggregate import group_points, summary_csv, summary_rows
    from .store import log_parent_files

    rows = summary_rows(spec, group_points(spec, table))
    text = summary_csv(spec, rows)
    files = [record.dir / "summary.csv"]
    files[0].write_text(text, encoding="utf-8")
    if spec.x is not None:
        from .plot import save_png, summary_figure

        files.append(record.dir / "summary.png")
        save_png(summary_figure(spec, rows, f"sweep {record.data.get('name')}"), files[1])
    if record.data.get("parent_run_id"):
        log_parent_files(record.data["tracking_uri"], record.data["parent_run_id"], files)
    if args.csv:
        sys.stdout.write(text)
        return 0
    from rich.table import Table

    from .aggregate import columns

    grouping = f"by {', '.join(spec.by)}" if spec.by else "over all points"
    view = Table(title=f"sweep {record.data.get('name')}: {', '.join(spec.metrics)} {grouping}")
    cols = columns(spec, rows)
    for col in cols:
        view.add_column(col, justify="left" if col in spec.by else "right")
    for row in rows:
        view.add_row(*["" if row[c] is None else f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c])
                       for c in cols])
    results_console(args).print(view)
    where = ", ".join(str(f) for f in files)
    _console(args).print(f"Wrote {where}; logged to the parent run {record.data.get('parent_run_id')} "
                         "under collect/")
    return 0
