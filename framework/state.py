"""The state that stages share, and the context each stage works through.

Stages never talk to MLflow or the console directly: they log through
:class:`StageContext`, which prefixes keys (``train/standard/loss``), fans out
to the tracker and to the lifecycle hooks, and shows progress.
"""

from __future__ import annotations

import copy
import io
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import attrs
import torch

from .data import DataBundle, SyntheticData
from .network import Network, apply_masks, build_network, prunable_parameters

if TYPE_CHECKING:
    from .config import ComponentSpec, Pipeline, StageSpec
    from .plugins import PluginHost


@attrs.define(eq=False)
class RunState:
    """Everything a pipeline has built so far; stages read and update it."""

    pipeline: "Pipeline"
    host: "PluginHost"
    device: torch.device
    data: DataBundle
    model: Network
    masks: dict[str, torch.Tensor] = attrs.field(factory=dict)
    synthetic: SyntheticData | None = None
    epoch: int = 0  # epochs trained so far, over all train stages (the step of probe metrics)
    step: int = 0  # optimizer steps so far
    init_state: dict[str, torch.Tensor] = attrs.field(factory=dict)  # weights at init, for rewinding
    tracker: Any = None
    console: Any = None
    extras: dict[str, Any] = attrs.field(factory=dict)  # free slot for plugins (namespaced keys)
    latest: dict[str, float] = attrs.field(factory=dict)  # last value of every metric logged

    @property
    def info(self):
        return self.data.info

    @property
    def seed(self) -> int:
        return self.pipeline.run.seed

    def build_model(self, seed: int | None = None) -> Network:
        """A fresh, initialized model of the pipeline's architecture on the run's device."""
        if seed is not None:
            torch.manual_seed(seed)
        return build_network(self.pipeline.model, self.data.info).to(self.device)

    def prunable(self, model: torch.nn.Module | None = None) -> dict[str, torch.nn.Parameter]:
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

    def component(self, kind: str, name: str, **params) -> Any:
        """Build a registered component by name with checked parameters (for composite components)."""
        from .config import structure_component
        from .errors import ConfigError

        spec, issues = structure_component(self.host.registry, kind, {"use": name, **params}, f"<{kind} {name}>")
        if issues:
            raise ConfigError(issues)
        return spec.build()


class StageContext:
    """How a component logs metrics and artifacts and shows progress."""

    def __init__(self, state: RunState, stage: "StageSpec | None", prefix: str, *, checkpointer: Any = None,
                 resume_from: dict | None = None):
        self.state = state
        self.stage = stage
        self.prefix = prefix
        self.last_metrics: dict[str, float] = {}
        #: saves checkpoints (None: checkpointing is off, ``[run] checkpoint_every = 0`` or untracked)
        self.checkpointer = checkpointer
        #: the mid-stage checkpoint this stage continues from, until :meth:`resume` consumes it
        self._resume_from = resume_from
        done = int(resume_from["stage_epoch"]) if resume_from else 0
        self._first_epoch = state.epoch - done

    @property
    def stage_epoch(self) -> int:
        """Epochs finished in this stage so far (a resumed stage counts the ones before the kill)."""
        return self.state.epoch - self._first_epoch

    @property
    def resuming(self) -> bool:
        """True while a checkpoint waits for :meth:`resume` to restore the trainer's objects."""
        return self._resume_from is not None

    @property
    def device(self) -> torch.device:
        return self.state.device

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

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

    def log_tensors(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        """Log tensors (masks, synthetic images) as a ``torch.save`` artifact loadable with weights_only."""
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in tensors.items()}, buf)
        self.log_artifact(name if name.endswith(".pt") else f"{name}.pt", buf.getvalue())

    def progress(self, iterable: Iterable, total: int | None = None, description: str = "") -> Iterator:
        """Iterate with a progress bar on a terminal (quiet elsewhere)."""
        from .progress import track

        return track(iterable, total=total, description=description or self.prefix, console=self.state.console)

    def print(self, *args: Any) -> None:
        if self.state.console is not None:
            self.state.console.print(*args)

    def epoch_end(self, epoch_metrics: dict[str, float] | None = None, model: torch.nn.Module | None = None,
                  checkpoint: dict[str, Any] | None = None) -> None:
        """Call once per finished epoch: counts it, logs metrics and runs the stage's periodic probes.

        A trainer that can resume passes ``checkpoint={"optimizer": opt, "scheduler": sched}``
        (objects with ``state_dict``, or plain tensors/numbers): every ``[run] checkpoint_every``
        epochs of the stage they are saved with the model, masks, counters and RNG states, and the
        trainer must then call :meth:`resume` before its first epoch. Without ``checkpoint`` only
        stage boundaries are checkpointed, and a killed stage restarts from its beginning.
        """
        self.state.epoch += 1
        if epoch_metrics:
            self.log_metrics(epoch_metrics)
            shown = ", ".join(f"{k} {v:.4g}" for k, v in epoch_metrics.items() if v is not None)
            self.print(f"  [dim]{self.prefix}[/] epoch {self.state.epoch}: {shown}")
        self.run_periodic_probes()
        if checkpoint is not None and self._resume_from is not None:
            raise RuntimeError(f"{self.prefix}: the trainer passes checkpoint= to ctx.epoch_end but did not call "
                               "ctx.resume(...) before its first epoch, so a resumed run would repeat epochs")
        if checkpoint is not None and self.checkpointer is not None and self.checkpointer.due(self.stage_epoch):
            self.checkpointer.save(self.state, next_stage=self.stage.index if self.stage else 0,
                                   stage_epoch=self.stage_epoch, objects=checkpoint)

    def resume(self, **objects: Any) -> int:
        """Restore the trainer's objects from the checkpoint this stage resumes; return the epoch to start at.

        Call it once, after building the optimizer/scheduler and before the epoch loop:
        ``for epoch in range(ctx.resume(optimizer=opt, scheduler=sched), epochs): ...``.
        Returns 0 (and changes nothing) when the stage is not being resumed. The model,
        masks, counters and RNG states are restored here too, so anything the trainer did
        with the RNG before this call does not change what follows.
        """
        payload, self._resume_from = self._resume_from, None
        if payload is None:
            return 0
        from .checkpoint import load_into, restore_state

        saved = payload.get("trainer", {})
        missing = [name for name in objects if name not in saved]
        if missing:
            raise RuntimeError(f"{self.prefix}: the checkpoint has no {', '.join(missing)} to resume "
                               f"(it saved {', '.join(saved) or 'nothing'})")
        restore_state(self.state, payload)
        for name, obj in objects.items():
            load_into(obj, saved[name])
        return int(payload["stage_epoch"])

    def run_periodic_probes(self) -> None:
        if self.stage is None:
            return
        for periodic in self.stage.probes:
            if self.state.epoch % periodic.every == 0:
                run_probe(self.state, periodic.spec, f"probe/{periodic.spec.name}", self.stage)

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


def run_probe(state: RunState, spec: "ComponentSpec", prefix: str, stage: "StageSpec | None" = None) -> dict:
    """Build and run one probe, logging its metrics under ``prefix`` at the current epoch."""
    ctx = StageContext(state, stage, prefix)
    probe = spec.build()
    metrics = probe.measure(state, ctx) or {}
    ctx.log_metrics(metrics)
    return ctx.last_metrics


def snapshot_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def clone_model(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model)


Callback = Callable[..., Any]
