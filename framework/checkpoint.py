"""Checkpoints of a running pipeline, and the bookkeeping that makes resume exact.

A checkpoint holds only plain data: tensors, dicts, lists, numbers and strings,
written with ``torch.save`` and read back with ``torch.load(weights_only=True)``,
so loading a checkpoint never runs code from the file. Writes are atomic (a
temporary file in the same folder, fsync, then ``os.replace``): a run killed
while saving leaves the previous checkpoint intact.

Where checkpoints live: ``DEEPSCOPE_CHECKPOINT_DIR`` if set, else a
``checkpoints/`` folder beside a sqlite tracking database, else
``./checkpoints``; then ``<root>/<run_id>/last.pt``. Only the newest is kept.

What a checkpoint holds: the run state (``RunState.state_dict()``: model,
masks, weights at init, every distilled set, counters, the last value of every
metric, the plain entries of ``state.extras``), RNG states (Python, NumPy,
torch, CUDA), how many values of each metric were logged (so a resumed run
neither loses nor repeats a metric step), where to continue (``next_stage``,
``stage_epoch``, ``stage_step``) and, mid-stage, the component's own objects
(:func:`to_plain`: optimizers and schedulers by ``state_dict``, private
``torch.Generator`` states, plain tensors, numbers, lists and dicts).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from .plain import check_plain
from .tracking import sqlite_path

FORMAT = 2
FILENAME = "last.pt"
ENV_DIR = "DEEPSCOPE_CHECKPOINT_DIR"


# --------------------------------------------------------------------------- where


def checkpoint_root(tracking_uri: str | None) -> Path:
    """The folder that holds one sub-folder of checkpoints per run."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    db = sqlite_path(tracking_uri)
    if db is not None:
        return db.parent / "checkpoints"
    return Path.cwd() / "checkpoints"


def checkpoint_path(tracking_uri: str | None, run_id: str) -> Path:
    return checkpoint_root(tracking_uri) / run_id / FILENAME


# --------------------------------------------------------------------------- files


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write ``payload`` atomically: readers see the old file or the new one, never half of one."""
    import torch

    check_plain(payload)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary unpickling)."""
    import torch

    from .errors import DeepscopeError

    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch's text would suggest weights_only=False: exactly what must not be done
        reason = "it holds objects other than tensors and plain data" if "weights_only" in str(exc) else \
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"
        raise DeepscopeError(f"cannot read checkpoint {path}: {reason}. It is damaged or was not written by "
                             "deepscope; nothing in it was loaded. Resume from another run, or start afresh.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DeepscopeError(f"{path} is not a deepscope checkpoint of format {FORMAT}")
    return payload


# --------------------------------------------------------------------------- RNG


def capture_rng() -> dict:
    """Python, NumPy, torch and CUDA generator states as plain tensors and numbers."""
    import numpy as np
    import torch

    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    out = {
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    if torch.cuda.is_available():
        out["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return out


def restore_rng(saved: Mapping[str, Any]) -> None:
    import numpy as np
    import torch

    py = saved["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = saved["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["gauss"]))
    torch.set_rng_state(saved["torch"])
    if saved.get("cuda") and torch.cuda.is_available():
        states = list(saved["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


# --------------------------------------------------------------------------- a component's objects


def to_plain(obj: Any) -> Any:
    """What is saved for one object passed as ``checkpoint=``: its ``state_dict()``, a generator's state,
    or the plain value itself (refused at save time if a weights_only load could not read it)."""
    import torch

    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return obj.state_dict()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    return obj


def load_into(obj: Any, saved: Any) -> Any:
    """Restore one object in place where it can be, and return the restored value.

    Objects with ``load_state_dict`` load it; a ``torch.Generator`` gets its state back; a tensor is
    overwritten in place (``copy_``, under ``no_grad``, so a leaf that requires grad stays a leaf); a list
    or dict is refilled. Immutable values (numbers, strings) cannot change in place: the saved value is
    returned, and :attr:`StageContext.restored` holds it.
    """
    import torch

    if isinstance(obj, torch.Generator):
        obj.set_state(saved)
        return obj
    if hasattr(obj, "load_state_dict") and callable(obj.load_state_dict):
        obj.load_state_dict(saved)
        return obj
    if isinstance(obj, torch.Tensor):
        if obj.shape != saved.shape:
            raise ValueError(f"cannot restore a tensor of shape {tuple(obj.shape)} from one of shape "
                             f"{tuple(saved.shape)}; build it with the saved shape before ctx.resume")
        with torch.no_grad():
            obj.copy_(saved.to(device=obj.device, dtype=obj.dtype))
        return obj
    if isinstance(obj, list):
        obj[:] = list(saved)
        return obj
    if isinstance(obj, dict):
        obj.clear()
        obj.update(saved)
        return obj
    return saved


# --------------------------------------------------------------------------- when to save


class Checkpointer:
    """Decides when a run saves, and writes its checkpoints.

    Epoch loops save every ``every`` epochs of a stage, step loops every ``every_steps`` steps, and either
    also when ``minutes`` have passed since the last save; every stage boundary is saved too.
    """

    def __init__(self, path: Path, fingerprint: str, ledger: Any, *, every: int = 0, every_steps: int = 0,
                 minutes: float = 0.0, clock=time.monotonic):
        self.path = Path(path)
        self.every = int(every)
        self.every_steps = int(every_steps)
        self.minutes = float(minutes)
        self.fingerprint = fingerprint
        self.ledger = ledger
        self.clock = clock
        self.last_save = clock()

    def _time_due(self) -> bool:
        return self.minutes > 0 and self.clock() - self.last_save >= 60 * self.minutes

    def due(self, stage_epoch: int) -> bool:
        """Whether an epoch loop that just finished its ``stage_epoch``-th epoch should save."""
        if stage_epoch <= 0:
            return False
        return (self.every > 0 and stage_epoch % self.every == 0) or self._time_due()

    def due_step(self, stage_step: int) -> bool:
        """Whether a step loop that just finished its ``stage_step``-th step should save."""
        if stage_step <= 0:
            return False
        return (self.every_steps > 0 and stage_step % self.every_steps == 0) or self._time_due()

    def save(self, state: Any, *, next_stage: int, stage_epoch: int = 0, stage_step: int = 0,
             objects: Mapping[str, Any] | None = None) -> None:
        payload = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "next_stage": int(next_stage),
            "stage_epoch": int(stage_epoch),
            "stage_step": int(stage_step),
            "state": state.state_dict(),
            "metric_counts": {k: int(v) for k, v in self.ledger.counts.items()},
            "rng": capture_rng(),
            "objects": {name: to_plain(obj) for name, obj in (objects or {}).items()},
        }
        save_checkpoint(self.path, payload)
        self.last_save = self.clock()
