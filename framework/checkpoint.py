"""Checkpoints of a running pipeline, and the bookkeeping that makes resume exact.

A checkpoint holds only plain data: tensors, dicts, lists, numbers and strings,
written with ``torch.save`` and read back with ``torch.load(weights_only=True)``,
so loading a checkpoint never runs code from the file. Writes are atomic (a
temporary file in the same folder, fsync, then ``os.replace``): a run killed
while saving leaves the previous checkpoint intact.

Where checkpoints live: ``DEEPSCOPE_CHECKPOINT_DIR`` if set, else a
``checkpoints/`` folder beside a sqlite tracking database, else
``./checkpoints``; then ``<root>/<run_id>/last.pt``. Only the newest is kept.

What a checkpoint holds: the model, the masks, the weights at init, synthetic
data, ``epoch``/``step`` counters, the last value of every metric, RNG states
(Python, NumPy, torch, CUDA), how many values of each metric were logged (so a
resumed run neither loses nor repeats a metric step), where to continue
(``next_stage`` and ``stage_epoch``) and, mid-stage, the trainer's own objects
(optimizer, scheduler: anything with ``state_dict``/``load_state_dict``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from .tracking import sqlite_path

FORMAT = 1
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


def pipeline_fingerprint(resolved: Mapping[str, Any]) -> str:
    """A hash of what runs (name, description and tracking URI left out): a resume must match it."""
    run = {k: v for k, v in resolved.get("run", {}).items() if k not in ("name", "description", "tracking_uri")}
    doc = {**resolved, "run": run}
    text = json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- files


def check_plain(value: Any, where: str = "checkpoint") -> None:
    """Refuse, at save time, anything ``torch.load(weights_only=True)`` would refuse at resume time."""
    import torch

    if value is None or isinstance(value, (bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.device)):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}; checkpoints hold str/int keys")
            check_plain(item, f"{where}.{key}")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(value).__name__}, which a weights_only checkpoint cannot hold; save "
                    "tensors, numbers, strings, lists and dicts (e.g. an object's state_dict())")


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
    except Exception as exc:
        raise DeepscopeError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
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


# --------------------------------------------------------------------------- run state


def _cpu(tensors: Mapping[str, Any]) -> dict:
    return {k: v.detach().cpu().clone() for k, v in tensors.items()}


def _plain_extras(extras: Mapping[str, Any]) -> dict:
    import torch

    return {k: v for k, v in extras.items()
            if isinstance(v, (int, float, str, bool, torch.Tensor)) and not isinstance(v, type)}


def state_payload(state: Any, *, next_stage: int, stage_epoch: int, objects: Mapping[str, Any] | None,
                  fingerprint: str, metric_counts: Mapping[str, int]) -> dict:
    """Everything needed to continue ``state`` at stage ``next_stage`` after ``stage_epoch`` of its epochs."""
    synthetic = None
    if state.synthetic is not None:
        synthetic = {"x": state.synthetic.x.detach().cpu(), "y": state.synthetic.y.detach().cpu(),
                     "lr": state.synthetic.lr, "extras": _plain_extras(state.synthetic.extras)}
    trainer = {}
    for name, obj in (objects or {}).items():
        trainer[name] = obj.state_dict() if hasattr(obj, "state_dict") else obj
    return {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "next_stage": int(next_stage),
        "stage_epoch": int(stage_epoch),
        "epoch": int(state.epoch),
        "step": int(state.step),
        "model": _cpu(state.model.state_dict()),
        "init_state": _cpu(state.init_state),
        "masks": _cpu(state.masks),
        "synthetic": synthetic,
        "latest": {k: float(v) for k, v in state.latest.items()},
        "metric_counts": {k: int(v) for k, v in metric_counts.items()},
        "rng": capture_rng(),
        "trainer": trainer,
    }


def restore_state(state: Any, payload: Mapping[str, Any]) -> None:
    """Put a checkpoint's model, masks, counters, synthetic data and RNG back into ``state``."""
    from .data import SyntheticData

    device = state.device
    state.model.load_state_dict(payload["model"])
    state.init_state = {k: v.to(device) for k, v in payload["init_state"].items()}
    state.masks = {k: v.to(device) for k, v in payload["masks"].items()}
    state.apply_masks()
    syn = payload.get("synthetic")
    if syn is not None:
        state.synthetic = SyntheticData(syn["x"].to(device), syn["y"].to(device), syn["lr"], dict(syn["extras"]))
    state.epoch = int(payload["epoch"])
    state.step = int(payload["step"])
    state.latest.update(payload["latest"])
    restore_rng(payload["rng"])


def load_into(obj: Any, saved: Any) -> Any:
    """Restore one trainer object: ``load_state_dict`` when it has one, else return the saved value."""
    if hasattr(obj, "load_state_dict"):
        obj.load_state_dict(saved)
        return obj
    return saved


# --------------------------------------------------------------------------- metrics


class MetricLedger:
    """Wraps the tracker: counts values logged per key, and on resume drops the ones already in MLflow.

    A run killed after its last checkpoint has logged some metrics that the
    resumed run recomputes. The checkpoint says how many values of each key
    were logged when it was written; MLflow's history beyond that count is the
    "replay window", and exactly those (key, step) entries are skipped once
    each when logged again. Steps of one key never decrease in deepscope, so
    the first ``count`` values in step order are the ones before the checkpoint.
    """

    def __init__(self, tracker: Any):
        self.tracker = tracker
        self.counts: Counter = Counter()
        self.replay: Counter = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracker, name)

    def start_replay(self, counts_at_checkpoint: Mapping[str, int]) -> None:
        client, run_id = self.tracker.client, self.tracker.run_id
        self.counts = Counter({k: int(v) for k, v in counts_at_checkpoint.items()})
        self.replay = Counter()
        for key in client.get_run(run_id).data.metrics:
            history = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
            for m in history[self.counts.get(key, 0):]:
                self.replay[(key, int(m.step))] += 1

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        fresh = {}
        for key, value in metrics.items():
            self.counts[key] += 1
            if self.replay.get((key, int(step)), 0) > 0:
                self.replay[(key, int(step))] -= 1
                continue
            fresh[key] = value
        if fresh:
            self.tracker.log_metrics(fresh, step)


class Checkpointer:
    """Saves a run's checkpoints every ``every`` epochs of a stage and at every stage boundary."""

    def __init__(self, path: Path, every: int, fingerprint: str, ledger: MetricLedger):
        self.path = Path(path)
        self.every = int(every)
        self.fingerprint = fingerprint
        self.ledger = ledger

    def due(self, stage_epoch: int) -> bool:
        return self.every > 0 and stage_epoch > 0 and stage_epoch % self.every == 0

    def save(self, state: Any, *, next_stage: int, stage_epoch: int = 0,
             objects: Mapping[str, Any] | None = None) -> None:
        save_checkpoint(self.path, state_payload(state, next_stage=next_stage, stage_epoch=stage_epoch,
                                                 objects=objects, fingerprint=self.fingerprint,
                                                 metric_counts=self.ledger.counts))
