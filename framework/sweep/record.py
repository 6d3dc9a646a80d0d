"""The sweep directory: what was submitted, and what each point became.

Layout::

    <dir>/sweep.json               hash -> point (index, values, config file, job id)
    <dir>/points/<hash>.toml       the point's resolved pipeline (what the worker runs)
    <dir>/points/<hash>.json       the point's status, run id and final metrics (worker-owned)
    <dir>/claims/<hash>            host:pid of the local worker that took the point (created atomically)
    <dir>/logs/                    worker output

``sweep.json`` has one writer (the submitting command); each status file has
one writer at a time (the worker running that point), and every write is a
temporary file plus ``os.replace``, so concurrent readers never see half a file.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import DeepscopeError

TERMINAL = ("FINISHED", "FAILED", "KILLED")
FORMAT = 1


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False, default=str)
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class SweepRecord:
    """Reads and writes one sweep directory."""

    def __init__(self, directory: str | Path, data: dict):
        self.dir = Path(directory).resolve()
        self.data = data

    # -- files --------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.dir / "sweep.json"

    @classmethod
    def open(cls, directory: str | Path) -> "SweepRecord":
        path = Path(directory) / "sweep.json"
        if not path.exists():
            raise DeepscopeError(f"{directory} is not a sweep directory (no sweep.json); "
                                 "`deepscope sweep FILE` creates one")
        return cls(directory, read_json(path))

    @classmethod
    def create_or_open(cls, directory: str | Path, **fields: Any) -> "SweepRecord":
        path = Path(directory) / "sweep.json"
        if path.exists():
            record = cls(directory, read_json(path))
            record.data.update({k: v for k, v in fields.items() if k not in ("created", "points")})
            return record
        return cls(directory, {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields,
                               "points": {}})

    def save(self) -> None:
        write_json(self.path, self.data)

    def config_path(self, digest: str) -> Path:
        return self.dir / "points" / f"{digest}.toml"

    def status_path(self, digest: str) -> Path:
        return self.dir / "points" / f"{digest}.json"

    def log_path(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    # -- points -------------------------------------------------------------
    @property
    def points(self) -> dict[str, dict]:
        return self.data["points"]

    def add_point(self, digest: str, index: int, values: dict, config_text: str) -> None:
        path = self.config_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(config_text, encoding="utf-8")
        entry = self.points.setdefault(digest, {})
        entry.update({"index": index, "values": values, "config": str(path.relative_to(self.dir))})

    def set_job(self, digest: str, job_id: str) -> None:
        self.points[digest]["job_id"] = job_id

    def status(self, digest: str) -> dict:
        """The worker's view of a point: status (PENDING before it starts), run_id, metrics."""
        path = self.status_path(digest)
        if not path.exists():
            return {"status": "PENDING"}
        try:
            return read_json(path)
        except (OSError, ValueError):
            return {"status": "UNKNOWN"}

    def write_status(self, digest: str, **fields: Any) -> dict:
        current = self.status(digest) if self.status_path(digest).exists() else {}
        current.update(fields, updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        write_json(self.status_path(digest), current)
        return current

    def ordered(self) -> list[tuple[str, dict]]:
        return sorted(self.points.items(), key=lambda item: item[1].get("index", 0))

    def claim(self, digest: str, owner: str) -> bool:
        """Atomically claim a point for one worker process: False if another has it.

        The claim file appears with its owner already written (a hard link of a finished temporary
        file), so another invocation never reads an empty claim; where the filesystem has no hard
        links, an O_EXCL create, then the write."""
        path = self.dir / "claims" / digest
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".claim-", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(owner)
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here
            return self._claim_exclusive(path, owner)
        finally:
            os.unlink(tmp)

    @staticmethod
    def _claim_exclusive(path: Path, owner: str) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(owner)
        return True

    def claim_owner(self, digest: str) -> str | None:
        """The ``host:pid`` of the worker that claimed a point, or None if nobody holds it."""
        try:
            return (self.dir / "claims" / digest).read_text().strip() or None
        except FileNotFoundError:
            return None

    def release_claims(self, digests: list[str]) -> list[str]:
        """Drop the claims whose worker is gone (a crash, a kill, a finished run); return the points
        still held by a live worker (another ``deepscope sweep`` on this directory), left alone."""
        held = []
        for digest in digests:
            owner = self.claim_owner(digest)
            if owner is not None and owner_alive(owner):
                held.append(digest)
                continue
            try:
                (self.dir / "claims" / digest).unlink()
            except FileNotFoundError:
                pass
        return held


def worker_owner(pid: int) -> str:
    """How a claim names the worker process ``pid`` of this host: ``host:pid``."""
    return f"{socket.gethostname()}:{pid}"


def owner_alive(owner: str) -> bool:
    """Whether a claim's ``host:pid`` names a running process. A claim from another host cannot be
    checked from here and counts as alive (remove ``<dir>/claims/<hash>`` by hand if that host is gone)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    try:  # a zombie (exited, not yet reaped) holds nothing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
