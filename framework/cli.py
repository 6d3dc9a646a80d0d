"""The ``deepscope`` command line.

Exit codes: 0 success, 1 the run failed, 2 bad input (config, data, plugin).
User errors print one clear paragraph and no traceback (``--debug`` shows it).
Nothing here imports torch until a pipeline actually runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from .cli_support import console_for as _console, default_host as _host, format_value, results_console
from .errors import DeepscopeError, RunFailed
from .hookspecs import hookimpl

QUICKSTART = Path(__file__).with_name("quickstart.toml")
#: the pseudo-kind of `deepscope list stages` / `deepscope show stage NAME`
STAGE = "stage"


def _kind(text: str, registry: Any) -> str:
    """A component kind (or ``stage``) from what the user typed: singular or plural."""
    text = text.strip().lower()
    for kind in (*registry.kinds, STAGE):
        if text in (kind, kind + "s", kind + "es"):
            return kind
    raise DeepscopeError(f"unknown component kind {text!r}; kinds are: {', '.join((*registry.kinds, STAGE))}")


# --------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    from .config import load_pipeline
    from .runner import run_pipeline
    from .tracking import resolve_tracking_uri

    console = _console(args)
    path = Path(args.file) if args.file else QUICKSTART
    if not args.file:
        console.print(f"No pipeline given: running the quickstart ([cyan]{path}[/]).")
    host = _host()
    pipeline = load_pipeline(path, host.registry)
    if pipeline.sweep is not None and not args.resume:
        raise DeepscopeError(f"{path}: $.sweep: this file describes a sweep; run it with `deepscope sweep {path}` "
                             "(or remove the [sweep] table to run the base point alone)")
    watcher = _RunWatcher(args.resume)
    host.pm.register(watcher)  # pluggy only: not a listed plugin, not in the run's tags
    uri = resolve_tracking_uri(args.tracking_uri or pipeline.run.tracking_uri)
    try:
        with warnings.catch_warnings():  # torch's note on a foreign pickle protocol: the error below says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            result = run_pipeline(pipeline, host, console=console, tracking_uri=args.tracking_uri,
                                  resume_run_id=args.resume)
    except DeepscopeError as exc:
        if args.resume and str(exc).startswith("cannot read checkpoint"):
            raise _unreadable_checkpoint(uri, args.resume) from None
        raise
    except KeyboardInterrupt:
        args.interrupt_note = _interrupt_note(path, watcher.run_id, uri)
        raise
    finally:
        host.pm.unregister(watcher)
    _print_results(results_console(args), result)
    _print_tracked_note(console, result)
    return 0


def _unreadable_checkpoint(uri: str, run_id: str) -> DeepscopeError:
    """A clear error for a checkpoint that is damaged or holds more than plain data (it is never unpickled)."""
    import zipfile

    from .checkpoint import checkpoint_path

    path = checkpoint_path(uri, run_id)
    try:
        with zipfile.ZipFile(path) as archive:
            complete = archive.testzip() is None
    except (zipfile.BadZipFile, OSError):
        complete = False
    why = ("it holds objects other than plain data (tensors, numbers, strings, lists, dicts): it was not written "
           "by deepscope or was tampered with" if complete else
           "it is truncated or corrupted (not a complete checkpoint archive)")
    return DeepscopeError(f"cannot resume run {run_id}: its checkpoint {path} is unusable: {why}. Nothing in it was "
                          "loaded or run. Restore the file from a backup, or start the pipeline again without "
                          "--resume.")


class _RunWatcher:
    """Learns the MLflow run id once a run starts, so an interrupt can name it."""

    def __init__(self, run_id: str | None):
        self.run_id = run_id

    @hookimpl
    def deepscope_run_started(self, run: Any) -> None:
        tracker = getattr(run, "tracker", None)
        if tracker is not None and getattr(tracker, "run_id", None):
            self.run_id = tracker.run_id


def _interrupt_note(path: Path, run_id: str | None, uri: str) -> str:
    """What Ctrl-C or SIGTERM during ``run`` says: the run id and, with a checkpoint, how to resume."""
    import shlex

    from .checkpoint import checkpoint_path

    if run_id is None:
        return "the run is marked KILLED in MLflow; what was logged is kept"
    text = f"run {run_id} is marked KILLED in MLflow; what was logged is kept."
    if checkpoint_path(uri, run_id).exists():
        text += (f" Continue it from its last checkpoint with: deepscope run {shlex.quote(str(path))} "
                 f"--resume {run_id}")
    else:
        text += " It has no checkpoint to resume from (set [run] checkpoint_every to make runs resumable)."
    return text


def _print_results(out: Any, result: Any) -> None:
    """The results table, on stdout."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"run {result.run_id or '(untracked)'}: {result.status}", show_lines=False)
    table.add_column("metric", overflow="fold")
    table.add_column("value", justify="right", overflow="fold")
    for key, value in sorted(result.metrics.items()):
        if "/" in key and key.count("/") > 3:  # per-layer details stay in MLflow
            continue
        table.add_row(escape(key), format_value(value))
    out.print(table)


def _print_tracked_note(console: Any, result: Any) -> None:
    """Where the run is stored: a note, on stderr."""
    if result.tracking_uri:
        from .tracking import resolve_tracking_uri

        default = result.tracking_uri == resolve_tracking_uri()
        console.print(f"Tracked in [cyan]{result.tracking_uri}[/]. Browse it with: [bold]deepscope ui[/]"
                      + ("" if default else f" --store {result.tracking_uri}"))


def cmd_validate(args: argparse.Namespace) -> int:
    from .config import load_pipeline

    registry = _host().registry
    pipeline = load_pipeline(args.file, registry)
    stages = ", ".join(f"{s.do}:{s.use}" for s in pipeline.stages) or "(no stages)"
    sweep = ""
    if pipeline.sweep is not None:  # every point is checked, as `deepscope sweep` would
        from .sweep.expand import expand_sweep

        _, points = expand_sweep(pipeline.raw, registry, file=str(args.file))
        sweep = f"; sweep of {len(points)} points"
    # one line, never wrapped by rich (a long path would otherwise break it where a script greps for it)
    results_console(args).print(f"[green]ok[/] {args.file}: data {pipeline.data.name}, model {pipeline.model.name}; "
                                f"stages {stages}{sweep}", soft_wrap=True)
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    host = _host()
    registry = host.registry
    if args.json:
        import json

        out = []
        for p in host.plugins():
            comps: dict[str, list[str]] = {}
            for c in registry.components():
                if c.plugin == p.name:
                    comps.setdefault(c.kind, []).append(c.name)
            out.append({"name": p.name, "version": p.version, "source": p.source, "components": comps})
        for dist, (ver, err) in sorted(registry.load_errors.items()):
            out.append({"name": dist, "version": ver, "error": err})
        for message in registry.duplicates:
            out.append({"clash": message})
        print(json.dumps(out, indent=2))
        return 0
    out = results_console(args)
    table = Table(title="deepscope plugins")
    for col in ("plugin", "version", "registers"):
        table.add_column(col)
    for p in host.plugins():
        parts = []
        for kind in registry.kinds:
            names = [c.name for c in registry.components(kind) if c.plugin == p.name]
            if names:
                parts.append(f"{kind}: {', '.join(names)}")
        stage_kinds = [k.name for k in registry.stage_kinds.values() if k.plugin == p.name]
        if stage_kinds:
            parts.append(f"stage kinds: {', '.join(stage_kinds)}")
        added = [k.name for k in registry.component_kinds.values() if k.plugin == p.name and p.source != "builtin"]
        if added:
            parts.append(f"component kinds: {', '.join(added)}")
        table.add_row(p.name, p.version, "\n".join(parts) or "(nothing)")
    for dist, (ver, err) in sorted(registry.load_errors.items()):
        table.add_row(dist, ver, f"[red]failed to load[/]: {escape(err)}")
    out.print(table)
    console = _console(args)
    for message in registry.duplicates:
        console.print(f"[red]name clash[/]: {escape(message)}")
    return 0


#: below this many columns, `list` and `show` drop to fewer columns rather than cut names
WIDE = 100


def cmd_list(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    registry = _host().registry
    kinds = [_kind(args.kind, registry)] if args.kind else list(registry.kinds)
    console = results_console(args)
    if kinds == [STAGE]:
        return _list_stage_kinds(console, registry)
    if console.width >= WIDE:
        table = Table(title="deepscope components")
        table.add_column("kind", no_wrap=True)
        table.add_column("name", no_wrap=True)
        table.add_column("plugin", overflow="fold")
        table.add_column("summary", overflow="fold")
        for kind in kinds:
            for c in registry.components(kind):
                name = c.name + (f" ({', '.join(c.aliases)})" if c.aliases else "")
                table.add_row(kind, escape(name), f"{c.plugin} {c.version}", escape(c.summary))
        console.print(table)
        return 0
    for kind in kinds:  # narrow: one table per kind, names never wrapped, aliases with the summary
        components = registry.components(kind)
        if not components:
            continue
        table = Table(title=f"{kind} components")
        table.add_column("name", no_wrap=True)
        table.add_column("plugin", overflow="fold")
        table.add_column("summary", overflow="fold")
        for c in components:
            summary = (f"(also {', '.join(c.aliases)}) " if c.aliases else "") + c.summary
            table.add_row(escape(c.name), c.plugin, escape(summary))
        console.print(table)
    return 0


def _list_stage_kinds(console: Any, registry: Any) -> int:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="deepscope stage kinds (do = ...)")
    wide = console.width >= WIDE
    table.add_column("do", no_wrap=True)
    table.add_column("uses", no_wrap=True)
    if wide:
        table.add_column("provides", overflow="fold")
    table.add_column("plugin", overflow="fold")
    table.add_column("summary", overflow="fold")
    for kind in registry.stage_kinds.values():
        name = kind.name + (f" ({', '.join(kind.aliases)})" if kind.aliases else "")
        provides = ", ".join(kind.provides)
        if wide:
            table.add_row(escape(name), kind.component_kind, provides, kind.plugin, escape(kind.doc))
        else:
            doc = kind.doc + (f"; provides {provides}" if provides else "")
            table.add_row(escape(name), kind.component_kind, kind.plugin, escape(doc))
    console.print(table)
    return 0


def _show_stage_kind(console: Any, registry: Any, name: str) -> int:
    kind = registry.stage_kind(name)
    if kind is None:
        raise DeepscopeError(f"unknown stage kind {name!r}; stage kinds are "
                             f"{', '.join(sorted([*registry.stage_kinds, *registry.stage_aliases]))}")
    console.print(f"[bold]do = \"{kind.name}\"[/] from {kind.plugin}: {kind.doc}")
    console.print(f"uses: a {kind.component_kind} (`deepscope list {kind.component_kind}`)")
    if kind.aliases:
        console.print(f"also written: {', '.join(kind.aliases)}")
    if kind.provides:
        console.print(f"provides to later stages: {', '.join(kind.provides)}")
    keys = ["do", "use", "name"] + (["probes"] if kind.probes else []) + (["data"] if kind.selects_data else [])
    console.print(f"stage keys: {', '.join(keys)}; every other key is a parameter of the {kind.component_kind}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import attrs
    from rich.markup import escape
    from rich.table import Table

    from .params import describe_type, field_doc

    registry = _host().registry
    kind = _kind(args.kind, registry)
    console = results_console(args)
    if kind == STAGE:
        return _show_stage_kind(console, registry, args.name)
    comp = registry.get(kind, args.name)
    console.print(f"[bold]{comp.kind} {comp.name}[/] from {comp.plugin} {comp.version}")
    doc = comp.doc or (comp.config_cls.__doc__ if comp.config_cls else "")
    if doc:
        console.print(doc.strip())
    if comp.requires:
        console.print(f"needs: {', '.join(comp.requires)}")
    contract = registry.component_kinds[comp.kind].contract
    if contract:
        console.print(f"contract: {contract}")
    if comp.config_cls is None:
        console.print("(no parameters)")
        return 0
    try:
        attrs.resolve_types(comp.config_cls)
    except Exception:  # an unresolvable forward reference: show the annotation text instead
        pass
    rows = []
    for f in attrs.fields(comp.config_cls):
        if not f.init:
            continue
        if f.default is attrs.NOTHING:
            default = "(required)"
        elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            default = repr(f.default.factory())
        else:
            default = repr(f.default)
        kind = f.metadata.get("component") if f.metadata else None
        type_text = f"{kind} name or {{ use = ..., ... }}" if kind else describe_type(f.type)
        if kind and f.metadata.get("many"):
            type_text = f"array of {kind} names or {{ use = ..., ... }}"
        rows.append((f.alias or f.name, type_text, default, field_doc(f)))
    if console.width >= WIDE:
        table = Table()
        table.add_column("parameter", no_wrap=True)
        table.add_column("type", overflow="fold")
        table.add_column("default", no_wrap=True)
        table.add_column("doc", overflow="fold")
        for row in rows:
            table.add_row(*(escape(text) for text in row))
        console.print(table)
        return 0
    from rich.padding import Padding

    for name, type_text, default, doc in rows:  # narrow: a block per parameter, its first line never wrapped
        console.print(f"[bold]{escape(name)}[/]: {escape(type_text)} = {escape(default)}", soft_wrap=True)
        if doc:
            console.print(Padding(escape(doc), (0, 0, 0, 4)))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve the MLflow UI until Ctrl-C or SIGTERM, which stop the server and every process it started."""
    import signal
    import subprocess

    from .cli_support import stop_process_tree
    from .tracking import resolve_tracking_uri

    store = args.store or resolve_tracking_uri()
    if "://" not in store:
        store = f"sqlite:///{Path(store).resolve()}"
    try:
        import flask  # noqa: F401  (the full mlflow package brings it)
    except ImportError:
        raise DeepscopeError("the MLflow UI needs the full mlflow package; install it with "
                             "`pip install 'deepscope[ui]'`") from None
    console = _console(args)
    base = f"http://127.0.0.1:{args.port}"
    runs = _runs_table_url(base, store, args.experiment)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
           "--port", str(args.port), "--workers", str(args.workers)]
    # MLflow's GenAI job runner (seven huey consumers) serves nothing deepscope logs: off unless asked for
    # and its own deprecation notices (Starlette, SQLAlchemy) are nothing a deepscope user can act on
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONWARNINGS": "ignore::DeprecationWarning",
           **os.environ}
    console.print(f"MLflow UI on {base} for {store} (Ctrl-C stops it)")
    if runs:
        console.print(f"runs of experiment {args.experiment!r}: {runs}", soft_wrap=True)
    proc = subprocess.Popen(cmd, start_new_session=True, env=env)  # its own group: stopped as a whole, below
    try:
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (sigterm_as_interrupt)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.stderr.write("\n")
        console.print("stopping the MLflow UI")
        stop_process_tree(proc)
        return 0


def _runs_table_url(base: str, store: str, experiment: str) -> str | None:
    """The UI page with the experiment's runs table (MLflow 3 opens on its GenAI views otherwise)."""
    try:
        from mlflow.tracking import MlflowClient

        from .tracking import sqlite_path, store_lock

        with store_lock(sqlite_path(store)):
            exp = MlflowClient(tracking_uri=store).get_experiment_by_name(experiment)
    except Exception:  # the UI still starts; it reports the store's problem itself
        return None
    # workflowType: the UI's "Model training" mode, where runs, metrics and artifacts are (not GenAI traces)
    return f"{base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning" if exp is not None else None


def cmd_repair_store(args: argparse.Namespace) -> int:
    """Repair a sqlite store half-migrated by concurrent first use (docs/tracking.md), keeping every run."""
    from .tracking import repair_store, resolve_tracking_uri

    store = args.store or resolve_tracking_uri()
    if "://" not in store:
        store = f"sqlite:///{Path(store).resolve()}"
    report = repair_store(store)
    done = []
    if report["dropped"]:
        done.append(f"dropped {', '.join(report['dropped'])}")
    if report["restored"]:
        done.append(f"restored {', '.join(report['restored'])} from alembic's copy")
    results_console(args).print(f"repaired {store}: {'; '.join(done) or 'no leftover migration tables'}; schema "
                                f"migrated to MLflow's current version; {report['runs']} runs kept", soft_wrap=True)
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepscope",
        description="Compose deep-learning science experiments from TOML pipelines; results go to MLflow.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for every error")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    parser.add_argument("--version", action="store_true", help="the core's and every plugin's version, then exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run a pipeline (no FILE: the quickstart on embedded data)")
    p.add_argument("file", nargs="?", help="pipeline TOML file")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
    p.add_argument("--resume", metavar="RUN_ID", help="continue this MLflow run from its last checkpoint "
                                                     "(needs [run] checkpoint_every > 0)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a pipeline without running it")
    p.add_argument("file")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plugins", help="installed plugins, what they register, load errors")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("list", help="registered components, optionally of one KIND")
    p.add_argument("kind", nargs="?", help="dataset, model, trainer, pruner, attack, distiller, probe, any kind a "
                                           "plugin adds, or stages (the do = ... kinds)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="a component's parameters: type, default, doc (or: show stage NAME)")
    p.add_argument("kind")
    p.add_argument("name")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("ui", help="start the MLflow UI on the local store (127.0.0.1 only)")
    p.add_argument("--store", help="tracking URI or sqlite file (default: ./mlflow.db)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--experiment", default="deepscope", help="whose runs table to link (default: deepscope)")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (default: 1, enough locally)")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("repair-store", help="repair a sqlite store left half-migrated by concurrent first use "
                                            "(leftover _alembic_tmp_* tables); every run is kept")
    p.add_argument("store", nargs="?",
                   help="tracking URI or sqlite file (default: MLFLOW_TRACKING_URI, else ./mlflow.db)")
    p.set_defaults(func=cmd_repair_store)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list:
    """Subcommands that live in their own modules (kept out of this file's imports)."""
    try:
        from .sweep.cli import register_cli
    except ImportError:
        return []
    return [register_cli]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        args.func = lambda _args: _print_versions()
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    debug = args.debug or os.environ.get("DEEPSCOPE_DEBUG") == "1"
    from . import cli_support

    cli_support.debug = debug
    from .runner import sigterm_as_interrupt

    sigterm_as_interrupt()
    try:
        return int(args.func(args) or 0)
    except DeepscopeError as exc:
        if debug:
            raise
        _report(args, "error", str(exc))
        return exc.exit_code
    except RunFailed as exc:
        if debug:
            import traceback

            traceback.print_exception(exc.__cause__ or exc)
        _report(args, "run failed", f"{exc} (the run is marked FAILED in MLflow with everything logged so "
                                     "far; rerun with --debug for the traceback)")
        return 1
    except KeyboardInterrupt:
        from . import progress

        if progress.live_bar_shown:  # the bar's line may still hold the cursor (and the terminal's ^C)
            sys.stderr.write("\n")
        _report(args, "interrupted", getattr(args, "interrupt_note", None)
                or "the run is marked KILLED in MLflow; what was logged is kept")
        return 130


def _print_versions() -> int:
    """``deepscope --version``: the core first, then one ``name version`` line per plugin."""
    from .plugins import CORE_PLUGIN, _version

    print(f"{CORE_PLUGIN} {_version(CORE_PLUGIN)}")
    host = _host()
    for p in host.plugins():
        if p.source != "builtin":
            print(f"{p.name} {p.version}")
    for name, (version, _) in sorted(host.load_errors.items()):
        print(f"{name} {version} (failed to load)")
    return 0


def _report(args: argparse.Namespace, label: str, message: str) -> None:
    from .progress import make_console

    from rich.markup import escape

    make_console().print(f"[bold red]{label}:[/] {escape(message)}", highlight=False, soft_wrap=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
