"""Small helpers shared by the CLI's command modules (kept free of heavy imports).

Results (tables, the ``ok`` line, listings) go to stdout so ``deepscope run f.toml > out.txt``
keeps them; progress bars, logs, notes and errors go to stderr.
"""

from __future__ import annotations

import argparse
import math
from typing import Any


def console_for(args: argparse.Namespace | None = None) -> Any:
    """A rich console on stderr (progress, notes), quiet under ``--quiet``."""
    from .progress import make_console

    return make_console(quiet=bool(getattr(args, "quiet", False)))


def results_console(args: argparse.Namespace | None = None) -> Any:
    """A rich console on stdout for what a command produces (tables, the ``ok`` line)."""
    from rich.console import Console

    return Console(quiet=bool(getattr(args, "quiet", False)), highlight=False)


def format_value(value: Any) -> str:
    """A metric for people: whole numbers without decimals (``500``), other floats with 4 decimals."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4f}"
    return str(value)


def default_host() -> Any:
    """The process-wide plugin host (every installed plugin); plugins that failed to import are
    reported once, one line each, on stderr (with their tracebacks under ``--debug``)."""
    import warnings

    from .plugins import PluginLoadWarning, get_host

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)  # reported below, as one line each
        host = get_host()
    report_load_failures(host)
    return host


_reported: set[tuple[int, str]] = set()
#: set by ``main`` from ``--debug`` / DEEPSCOPE_DEBUG=1: load failures then come with their tracebacks
debug = False


def report_load_failures(host: Any) -> None:
    """Print each plugin import failure of ``host`` once per process, on stderr."""
    import sys

    from .plugins import load_failure_line

    for name, (version, error) in sorted(host.load_errors.items()):
        if (id(host), name) in _reported:
            continue
        _reported.add((id(host), name))
        trace = getattr(host, "load_tracebacks", {}).get(name)
        if debug and trace:
            sys.stderr.write(trace)
        sys.stderr.write(load_failure_line(name, version, error) + "\n")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux ``/proc``; empty elsewhere), children before grandchildren."""
    import os

    parents: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        import os

        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return not os.path.isdir("/proc")


def stop_process_tree(proc: Any, timeout: float = 10.0) -> None:
    """Stop a server started in its own session and everything it spawned: SIGTERM, then SIGKILL.

    The whole tree is collected first (workers that start their own session would escape a
    process-group signal), then its group and each member are signalled.
    """
    import os
    import signal
    import time

    tree = descendants(proc.pid)

    def send(sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            pass
        for pid in tree:
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc.poll() is None or any(alive(p) for p in tree)):
        time.sleep(0.1)
    if proc.poll() is None or any(alive(p) for p in tree):
        send(signal.SIGKILL)
    proc.wait()
