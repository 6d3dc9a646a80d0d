"""Small helpers shared by the CLI's command modules (kept free of heavy imports).

Results (tables, the ``ok`` line, listings) go to stdout so ``deepscope run f.toml > out.txt``
keeps them; progress bars, logs, notes and errors go to stderr.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

#: set on the parsed arguments by commands whose console output *is* the result (``sweep status``)
RESULTS_ATTR = "results_to_stdout"


def console_for(args: argparse.Namespace | None = None) -> Any:
    """A rich console on stderr (progress, notes), quiet under ``--quiet``; on stdout for commands
    flagged with :data:`RESULTS_ATTR`."""
    if getattr(args, RESULTS_ATTR, False):
        return results_console(args)
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
    """The process-wide plugin host (every installed plugin)."""
    from .plugins import get_host

    return get_host()
