"""Progress bars for long stages: rich on a terminal, silent elsewhere (logs, CI)."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

#: whether a live bar was drawn in this process (an interrupt message then starts on a fresh line)
live_bar_shown = False


def make_console(quiet: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=True, quiet=quiet, highlight=False)


def track(iterable: Iterable, total: int | None = None, description: str = "", console: Any = None) -> Iterator:
    if console is None or not console.is_terminal or console.quiet:
        yield from iterable
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    global live_bar_shown
    live_bar_shown = True
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task)
