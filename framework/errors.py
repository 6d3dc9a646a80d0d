"""Exceptions that the CLI turns into a clear message and an exit code.

User errors (bad config, bad data, bad plugin) exit 2 without a traceback;
anything else that breaks a run exits 1.
"""

from __future__ import annotations

from typing import Iterable


class DeepscopeError(Exception):
    """Base class for errors caused by the user's input (exit code 2)."""

    exit_code = 2


class ConfigIssue:
    """One problem in a pipeline file: where it is and what is wrong."""

    __slots__ = ("path", "message")

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message

    def __repr__(self) -> str:
        return f"ConfigIssue({self.path!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfigIssue) and (self.path, self.message) == (other.path, other.message)


class ConfigError(DeepscopeError):
    """One or more problems in a pipeline; every problem is reported at once.

    Components may raise ``ConfigError("J=5 is too large ...", key="J")`` while
    they are built; the runner prefixes the key path of the stage that built
    them and the file name.
    """

    def __init__(self, issues: Iterable[ConfigIssue] | str, *, key: str | None = None, file: str | None = None):
        if isinstance(issues, str):
            issues = [ConfigIssue(key or "", issues)]
        self.issues = list(issues)
        self.file = file
        super().__init__(self.render())

    def with_prefix(self, prefix: str, file: str | None = None) -> "ConfigError":
        """Return the same issues located under ``prefix`` (e.g. ``$.stage[2]``); absolute paths stay."""
        issues = [ConfigIssue(i.path if i.path.startswith("$") else _join_path(prefix, i.path), i.message)
                  for i in self.issues]
        return ConfigError(issues, file=file or self.file)

    def render(self) -> str:
        where = f"{self.file}: " if self.file else ""
        lines = [f"{where}{i.path}: {i.message}" if i.path else f"{where}{i.message}" for i in self.issues]
        return "\n".join(lines)

    def __str__(self) -> str:  # re-render so a later ``file`` shows
        return self.render()


def _join_path(prefix: str, path: str) -> str:
    if not path:
        return prefix
    if path.startswith("$"):
        path = path[1:]
    if path and not path.startswith((".", "[")):
        path = "." + path
    return prefix + path


class UnknownComponentError(DeepscopeError):
    """A pipeline names a component that no loaded plugin registers."""


class DuplicateComponentError(DeepscopeError):
    """Two plugins register the same name for the same kind."""


class PluginLoadError(DeepscopeError):
    """A plugin failed to import while strict loading is on."""


class DataError(DeepscopeError):
    """A dataset is missing or malformed; the message says where we looked."""


class RunFailed(Exception):
    """A run raised while executing (exit code 1); MLflow keeps what was logged."""

    exit_code = 1
