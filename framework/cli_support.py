"""Small helpers shared by the CLI's command modules (kept free of heavy imports)."""

from __future__ import annotations

import argparse
from typing import Any


def console_for(args: argparse.Namespace | None = None) -> Any:
    """A rich console on stderr, quiet under ``--quiet``."""
    from .progress import make_console

    return make_console(quiet=bool(getattr(args, "quiet", False)))


def default_host() -> Any:
    """The process-wide plugin host (every installed plugin)."""
    from .plugins import get_host

    return get_host()
