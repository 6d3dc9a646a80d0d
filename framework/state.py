"""The state that stages share, and the context each stage works through.

Stages never talk to MLflow or the console directly: they log through
:class:`StageContext`, which prefixes keys (``train/standard/loss``), fans out
to the tracker and to the lifecycle hooks, shows progress, and checkpoints
loops that count epochs (``ctx.epoch_end``) or steps (``ctx.step_end``).

What a component may touch in :class:`RunState` is written down in
``docs/writing-a-plugin.md``; in short: the model's weights (trainers), masks
only through ``set_masks`` (pruners), ``step`` (trainers count optimizer
steps), ``extras`` under namespaced keys (checkpointed when plain). The core
owns the rest: ``epoch`` advances through ``ctx.epoch_end``, ``data`` is bound
per stage, distilled sets are added by the distill stage.
"""

from __future__ import annotations

import copy
import csv
import io
import json
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import attrs
import torch

from .data import DataBundle, SyntheticData, plain_entries
from .network import Network, apply_masks, build_network, prunable_parameters

if TYPE_CHECKING:
    from .config import ComponentSpec, Pipeline, StageSpec
    from .plugins import PluginHost

REAL = "real"
SYNTHETIC = "synthetic"


@attrs.define(eq=False)
class RunState:
    """Everything a pipeline has built so far; stages read and update it (see the module docstring)."""

    pipeline: "Pipeline"
    host: "PluginHost"
    device: torch.device
    data: DataBundle  # the data of the running stage: the real data, or a distilled set bound by `data = ...`
    model: Network
    masks: dict[str, torch.Tensor] = attrs.field(factory=dict)  # pruning masks: global, never regrow
    synthetic: SyntheticData | None = None  # the latest distilled set
    #: every distilled set of the run, by name ``synthetic/<stage name>``, in the order they were made
    synthetic_sets: dict[str, SyntheticData] = attrs.field(factory=dict)
    epoch: int = 0  # epochs trained so far, over all train stages (the step of probe metrics)
    step: int = 0  # optimizer steps so far
    init_state: dict[str, Any] = attrs.field(factory=dict)  # weights at init, for rewinding
    tracker: Any = None
    console: Any = None
    extras: dict[str, Any] = attrs.field(factory=dict)  # free slot for plugins (namespaced keys)
    latest: dict[str, float] = attrs.field(factory=dict)  # last value of every metric logged
    real_data: DataBundle | None = None  # the pipeline's [data], whatever a stage is bound to

    def __attrs_post_init__(self):
        if self.real_data is None:
            self.real_data = self.data

    @property
    def info(self):
        return self.data.info

    @property
    def seed(self) -> int:
        return self.pipeline.run.seed

    # -- models ---------------------------------------------------------------
    def build_model(self, spec: "ComponentSpec | str | dict | None" = None, seed: int | None = None) -> Network:
        """A fresh model on the run's device: the pipeline's ``[model]``, or any registered one by spec.

        ``spec`` is a ComponentSpec, a model name, or a table ``{"use": "resnet-18", ...}``. With ``seed``
        the model is initialized from that seed and the global RNG is left exactly as it was; without
        one, initialization draws from the global RNG like any other layer construction.
        """
        spec = self._model_spec(spec)
        if seed is None:
            return build_network(spec, self.info).to(self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return build_network(spec, self.info).to(self.device)

    def _model_spec(self, spec: Any) -> "ComponentSpec":
        if spec is None:
            return self.pipeline.model
        if isinstance(spec, (str, dict)):
            from .config import structure_component
            from .errors import ConfigError

            table = {"use": spec} if isinstance(spec, str) else dict(spec)
            built, issues = structure_component(self.host.registry, "model", table, f"<model {table.get('use')}>")
            if issues:
                raise ConfigError(issues)
            return built
        return spec

    def component(self, kind: str, name: str, **params) -> Any:
        """Build a registered component by name with checked parameters (for composite components)."""
        from .config import structure_component
        from .errors import ConfigError

        spec, issues = structure_component(self.host.registry, kind, {"use": name, **params}, f"<{kind} {name}>")
        if issues:
            raise ConfigError(issues)
        return spec.build()

    # -- pruning masks --------------------------------------------------------
    def prunable(self, model: torch.nn.Module | None = None) -> dict[str, torch.nn.Parameter]:
        """The prunable weights (conv and linear kernels) by ``named_parameters`` name: ``body.<path>.weight``,
        e.g. ``body.fc1.weight`` for a named layer or ``body.1.weight`` in an ``nn.Sequential`` body."""
        return prunable_parameters(model if model is not None else self.model)

    def set_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """Combine with earlier masks (pruning never regrows) and apply now."""
        merged = {}
        for name, mask in masks.items():
            mask = mask.detach().to(self.device).bool()
            if name in self.masks:
                mask = mask & self.masks[name].bool()
            merged[name] = mask
        self.masks.update(merged)
        self.apply_masks()

    def apply_masks(self, model: torch.nn.Module | None = None) -> None:
        apply_masks(model if model is not None else self.model, self.masks)

    def rewind(self) -> None:
        """Reset the surviving weights to their values at initialization (lottery-ticket style)."""
        self.model.load_state_dict(self.init_state)
        self.apply_masks()

    # -- named datasets -------------------------------------------------------
    def add_synthetic(self, label: str, data: SyntheticData) -> str:
        """Add a distilled set as ``synthetic/<label>`` (and make it the latest); return its name."""
        name = f"{SYNTHETIC}/{label}"
        self.synthetic_sets.pop(name, None)  # re-adding moves it to the end: it is the latest now
        self.synthetic_sets[name] = data
        self.synthetic = data
        return name

    def synthetic_set(self, name: str = SYNTHETIC) -> SyntheticData:
        """``"synthetic"`` (the latest distilled set) or ``"synthetic/<stage name>"``."""
        if name == SYNTHETIC:
            if self.synthetic is None:
                raise LookupError("no synthetic set: no distill stage has run yet")
            return self.synthetic
        if name not in self.synthetic_sets:
            raise LookupError(f"no synthetic set {name!r}; the run has {', '.join(self.synthetic_sets) or 'none'}")
        return self.synthetic_sets[name]

    @contextmanager
    def using_data(self, name: str = REAL) -> Iterator[DataBundle]:
        """Bind ``state.data`` to a named dataset for one stage: its training split is that set, the test
        split stays the real one. Input-space sets are mapped to pixel space through the model's
        preprocessing, so that ``model(x)`` sees exactly the distilled inputs."""
        if name == REAL:
            yield self.data
            return
        synthetic = self.synthetic_set(name)
        x = synthetic.x.detach()
        if synthetic.space == "input":
            with torch.no_grad():
                x = self.model.from_input(x.to(self.device))
        bound = self.real_data.with_train(torch.utils.data.TensorDataset(x.cpu(), synthetic.y.detach().cpu()))
        previous, self.data = self.data, bound
        try:
            yield bound
        finally:
            self.data = previous

    @contextmanager
    def current_iterate(self, label: str, data: SyntheticData | None) -> Iterator[None]:
        """While a distiller runs its periodic probes: its current set is ``synthetic`` and ``synthetic/<label>``."""
        if data is None:
            yield
            return
        name = f"{SYNTHETIC}/{label}"
        saved_latest, saved_named = self.synthetic, self.synthetic_sets.get(name)
        self.synthetic = self.synthetic_sets[name] = data
        try:
            yield
        finally:
            self.synthetic = saved_latest
            if saved_named is None:
                self.synthetic_sets.pop(name, None)
            else:
                self.synthetic_sets[name] = saved_named

    # -- persistence ----------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a checkpoint keeps of the run, as plain data (tensors on the CPU, numbers, strings).

        ``extras`` entries that a weights_only checkpoint cannot hold (modules, functions, generators)
        are left out, with a note on the console; keep such things out of ``extras`` or store a plain
        form (a ``state_dict()``).
        """
        extras = plain_entries(self.extras)
        dropped = sorted(set(self.extras) - set(extras))
        if dropped and self.console is not None:
            self.console.print(f"[yellow]note[/]: state.extras entries not checkpointed (not plain data): "
                               f"{', '.join(dropped)}")
        latest = next((name for name, data in self.synthetic_sets.items() if data is self.synthetic), None)
        return {
            "epoch": int(self.epoch),
            "step": int(self.step),
            "model": _cpu(self.model.state_dict()),
            "init_state": _cpu(self.init_state),
            "masks": _cpu(self.masks),
            "synthetic_sets": {name: data.to_dict() for name, data in self.synthetic_sets.items()},
            "latest_synthetic": latest,
            "latest": {k: float(v) for k, v in self.latest.items()},
            "extras": extras,
        }

    def load_state_dict(self, saved: dict) -> None:
        """Put a :meth:`state_dict` back (on the run's device)."""
        device = self.device
        self.model.load_state_dict(saved["model"])
        self.init_state = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                           for k, v in saved["init_state"].items()}
        self.masks = {k: v.to(device) for k, v in saved["masks"].items()}
        self.apply_masks()
        self.synthetic_sets = {}
        for name, data in saved["synthetic_sets"].items():
            restored = SyntheticData.from_dict(data)
            restored.x, restored.y = restored.x.to(device), restored.y.to(device)
            self.synthetic_sets[name] = restored
        latest = saved.get("latest_synthetic")
        self.synthetic = self.synthetic_sets.get(latest) if latest else None
        self.epoch = int(saved["epoch"])
        self.step = int(saved["step"])
        self.latest.update(saved["latest"])
        self.extras.update(saved["extras"])

    @property
    def cache(self):
        """The content-addressed cache (``DEEPSCOPE_CACHE``) for expert trajectories, kernels, ZCA..."""
        from .cache import Cache

        return Cache()


def _copy(values: dict[str, Any], device: str | None = None) -> dict[str, Any]:
    """Detached copies of a state dict's tensors (on ``device`` if given); extra state deep-copied."""
    return {k: v.detach().to(device).clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
            for k, v in values.items()}


def _cpu(values: dict[str, Any]) -> dict[str, Any]:
    return _copy(values, "cpu")


class StageContext:
    """How a component logs metrics and artifacts, shows progress and checkpoints its loop."""

    def __init__(self, state: RunState, stage: "StageSpec | None", prefix: str, *, checkpointer: Any = None,
                 resume_from: dict | None = None):
        self.state = state
        self.stage = stage
        self.prefix = prefix
        self.last_metrics: dict[str, float] = {}
        #: saves checkpoints (None: checkpointing is off, or the run is untracked)
        self.checkpointer = checkpointer
        #: the mid-stage checkpoint this stage continues from, until :meth:`resume` consumes it
        self._resume_from = resume_from
        done = int(resume_from["stage_epoch"]) if resume_from else 0
        self._first_epoch = state.epoch - done
        #: steps finished in this stage so far (``step_end`` loops; a resumed stage counts those before the kill)
        self.stage_step = int(resume_from.get("stage_step", 0)) if resume_from else 0
        #: after :meth:`resume`: every object's saved value (numbers and strings cannot be restored in place)
        self.restored: dict[str, Any] = {}

    @property
    def stage_epoch(self) -> int:
        """Epochs finished in this stage so far (a resumed stage counts the ones before the kill)."""
        return self.state.epoch - self._first_epoch

    @property
    def resuming(self) -> bool:
        """True while a checkpoint waits for :meth:`resume` to restore the component's objects."""
        return self._resume_from is not None

    @property
    def device(self) -> torch.device:
        return self.state.device

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    # -- logging --------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log metrics under this stage's prefix; ``step`` defaults to epochs trained so far."""
        step = self.state.epoch if step is None else int(step)
        full = {}
        for k, v in metrics.items():
            if v is None:
                continue
            if isinstance(v, torch.Tensor):
                v = v.item()
            full[self.key(k)] = float(v)
        self.last_metrics.update(full)
        self.state.latest.update(full)
        if self.state.tracker is not None:
            self.state.tracker.log_metrics(full, step)
        self.state.host.hook.deepscope_metrics_logged(run=self.state, metrics=full, step=step)

    def log_artifact(self, name: str, data: bytes | str | Path) -> None:
        """Log bytes, text or a file as ``<prefix>/<name>`` in the run's artifacts."""
        if self.state.tracker is None:
            return
        if isinstance(data, Path):
            data = data.read_bytes()
        if isinstance(data, str):
            data = data.encode()
        self.state.tracker.log_bytes(f"{self.prefix}/{name}", data)

    def log_figure(self, fig: Any, name: str) -> None:
        """Log a matplotlib figure as a PNG artifact and close it."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.log_artifact(name if name.endswith(".png") else f"{name}.png", buf.getvalue())

    def log_tensors(self, name: str, tensors: dict[str, Any]) -> None:
        """Log tensors (and plain values) as a ``torch.save`` artifact loadable with weights_only."""
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}, buf)
        self.log_artifact(name if name.endswith(".pt") else f"{name}.pt", buf.getvalue())

    def log_table(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Log rows (dicts of numbers and strings) as ``<name>.csv`` and ``<name>.json`` artifacts.

        For per-index results (eigen-features, accuracy matrices); the columns are the union of the
        rows' keys in first-seen order, a row's missing cell is empty in the CSV and absent in the JSON.
        """
        rows = [{k: _cell(v) for k, v in row.items()} for row in rows]
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        self.log_artifact(f"{name}.csv", text.getvalue())
        self.log_artifact(f"{name}.json", json.dumps(rows, indent=1))

    def progress(self, iterable: Iterable, total: int | None = None, description: str = "") -> Iterator:
        """Iterate with a progress bar on a terminal (quiet elsewhere)."""
        from .progress import track

        return track(iterable, total=total, description=description or self.prefix, console=self.state.console)

    def print(self, *args: Any) -> None:
        if self.state.console is not None:
            self.state.console.print(*args)

    # -- loops ----------------------------------------------------------------
    def epoch_end(self, epoch_metrics: dict[str, float] | None = None, model: torch.nn.Module | None = None,
                  checkpoint: dict[str, Any] | None = None) -> None:
        """Call once per finished epoch: counts it, logs metrics and runs the stage's periodic probes.

        A trainer that can resume passes ``checkpoint={"optimizer": opt, "scheduler": sched}``
        (see :meth:`resume` for what may go in): every ``[run] checkpoint_every`` epochs of the
        stage (or ``checkpoint_minutes``) they are saved with the run state and RNG states, and
        the trainer must then call :meth:`resume` before its first epoch. Without ``checkpoint``
        only stage boundaries are checkpointed, and a killed stage restarts from its beginning.
        """
        self.state.epoch += 1
        if epoch_metrics:
            self.log_metrics(epoch_metrics)
            shown = ", ".join(f"{k} {v:.4g}" for k, v in epoch_metrics.items() if v is not None)
            self.print(f"  [dim]{self.prefix}[/] epoch {self.state.epoch}: {shown}")
        self.run_periodic_probes()
        self._check_resumed(checkpoint)
        if checkpoint is not None and self.checkpointer is not None and self.checkpointer.due(self.stage_epoch):
            self.checkpointer.save(self.state, next_stage=self.stage.index if self.stage else 0,
                                   stage_epoch=self.stage_epoch, objects=checkpoint)

    def step_end(self, metrics: dict[str, float] | None = None, *, checkpoint: dict[str, Any] | None = None,
                 synthetic: SyntheticData | None = None) -> None:
        """Call once per finished step of a loop that counts steps (a distiller's meta-steps).

        Counts the step (``ctx.stage_step``; ``state.epoch`` is left alone), logs ``metrics`` at step
        ``stage_step``, runs the stage's ``every_steps`` probes against ``synthetic`` (the current
        iterate, seen by the probes as ``state.synthetic``), and checkpoints ``checkpoint`` objects
        every ``[run] checkpoint_every_steps`` steps (or ``checkpoint_minutes``); a component that
        passes ``checkpoint`` must call :meth:`resume` before its first step.
        """
        self.stage_step += 1
        if metrics:
            self.log_metrics(metrics, step=self.stage_step)
        self.run_periodic_probes(step=self.stage_step, synthetic=synthetic)
        self._check_resumed(checkpoint)
        if checkpoint is not None and self.checkpointer is not None and self.checkpointer.due_step(self.stage_step):
            self.checkpointer.save(self.state, next_stage=self.stage.index if self.stage else 0,
                                   stage_epoch=self.stage_epoch, stage_step=self.stage_step, objects=checkpoint)

    def _check_resumed(self, checkpoint: dict | None) -> None:
        if checkpoint is not None and self._resume_from is not None:
            raise RuntimeError(f"{self.prefix}: the component passes checkpoint= to ctx.epoch_end/step_end but did "
                               "not call ctx.resume(...) before its loop, so a resumed run would repeat work")

    def resume(self, **objects: Any) -> int:
        """Restore the component's objects from the checkpoint this stage resumes; return where to start.

        Call it once, after building the objects and before the loop:
        ``for epoch in range(ctx.resume(optimizer=opt, scheduler=sched), epochs): ...`` (epoch loops
        get the epoch to start at, step loops the step). What may be passed (the same names as in
        ``checkpoint=``): objects with ``state_dict``/``load_state_dict`` (optimizers, schedulers,
        modules), ``torch.Generator`` s, tensors (restored in place), lists and dicts of plain data
        (refilled in place), numbers and strings (read them back from ``ctx.restored[name]``).
        Returns 0 (and changes nothing) when the stage is not being resumed. The run state and RNG
        states are restored here too, so what the component drew before this call does not matter.
        """
        payload, self._resume_from = self._resume_from, None
        if payload is None:
            return 0
        from .checkpoint import load_into, restore_rng

        saved = payload.get("objects", {})
        missing = [name for name in objects if name not in saved]
        if missing:
            raise RuntimeError(f"{self.prefix}: the checkpoint has no {', '.join(missing)} to resume "
                               f"(it saved {', '.join(saved) or 'nothing'})")
        self.state.load_state_dict(payload["state"])
        restore_rng(payload["rng"])
        for name, obj in objects.items():
            self.restored[name] = load_into(obj, saved[name])
        step = int(payload.get("stage_step", 0))
        return step if step > 0 else int(payload["stage_epoch"])

    def run_periodic_probes(self, step: int | None = None, synthetic: SyntheticData | None = None) -> None:
        """Epoch loops (``step`` None): probes with ``every`` on the global epoch, logged under ``probe/<name>``.
        Step loops: probes with ``every_steps`` on the stage step, logged under ``<stage key>/probe/<name>``."""
        if self.stage is None:
            return
        for periodic in self.stage.probes:
            if step is None and periodic.every is not None and self.state.epoch % periodic.every == 0:
                run_probe(self.state, periodic.spec, f"probe/{periodic.spec.name}", self.stage)
            elif step is not None and periodic.every_steps is not None and step % periodic.every_steps == 0:
                with self.state.current_iterate(self.stage.label, synthetic):
                    run_probe(self.state, periodic.spec, f"{self.prefix}/probe/{periodic.spec.name}", self.stage,
                              step=step)

    @contextmanager
    def eval_mode(self, model: torch.nn.Module | None = None):
        """Temporarily put a model in eval mode, restoring its previous mode."""
        model = model if model is not None else self.state.model
        was = model.training
        model.eval()
        try:
            yield model
        finally:
            model.train(was)


def _cell(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def run_probe(state: RunState, spec: "ComponentSpec", prefix: str, stage: "StageSpec | None" = None,
              step: int | None = None) -> dict:
    """Build and run one probe, logging its metrics under ``prefix`` at ``step`` (default: the epoch)."""
    ctx = StageContext(state, stage, prefix)
    probe = spec.build()
    metrics = probe.measure(state, ctx) or {}
    ctx.log_metrics(metrics, step=step)
    return ctx.last_metrics


def snapshot_state_dict(model: torch.nn.Module) -> dict[str, Any]:
    return _copy(model.state_dict())


def clone_model(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model)


Callback = Callable[..., Any]
