"""Runs a checked pipeline: builds data and model, runs stages in order, tracks it all.

A run that raises ends FAILED in MLflow and Ctrl-C ends KILLED; both keep
everything logged so far.
"""

from __future__ import annotations

import os
import random
import subprocess
from typing import Any

import attrs

from .config import Pipeline, dump_toml
from .errors import ConfigError, DeepscopeError, RunFailed
from .plugins import PluginHost


@attrs.define
class RunResult:
    run_id: str | None
    status: str
    metrics: dict[str, float]
    state: Any = None
    tracking_uri: str | None = None


def seed_everything(seed: int, deterministic: bool = False) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # set both ways: runs in one process (inline sweeps, tests) must not inherit an earlier run's mode
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        torch.backends.cudnn.benchmark = False


def pick_device(requested: str):
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("CUDA was requested but no CUDA device is available; use device = \"auto\" "
                              "or \"cpu\"", key="$.run.device")
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"there are only {torch.cuda.device_count()} CUDA devices", key="$.run.device")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("MPS was requested but is not available", key="$.run.device")
    return torch.device(requested)


def sigterm_as_interrupt() -> None:
    """Treat SIGTERM (kill, scancel, preemption) like Ctrl-C, so the run ends KILLED with its data kept."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def open_tracker(uri: str, experiment: str):
    """The MLflow tracker, or a user error naming the URI when the store cannot be opened."""
    from .tracking import Tracker

    try:
        return Tracker(uri, experiment)
    except DeepscopeError:
        raise
    except Exception as exc:
        raise DeepscopeError(
            f"cannot open the MLflow store {uri!r} (experiment {experiment!r}): {type(exc).__name__}: {exc}. "
            "Check [run] tracking_uri, --tracking-uri or MLFLOW_TRACKING_URI; for a server, check that it runs "
            "and is reachable.") from None


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_tags(pipeline: Pipeline, host: PluginHost, device: Any) -> dict[str, str]:
    tags = {f"deepscope.plugin.{p.name}": p.version for p in host.plugins()}
    tags["deepscope.device"] = str(device)
    tags["deepscope.file"] = pipeline.file
    tags["deepscope.seed"] = str(pipeline.run.seed)
    if pipeline.run.description:
        tags["mlflow.note.content"] = pipeline.run.description
    sha = git_sha()
    if sha:
        tags["mlflow.source.git.commit"] = sha
    return tags


def _load_resume(pipeline: Pipeline, uri: str, run_id: str, fingerprint: str) -> dict:
    from .checkpoint import checkpoint_path, load_checkpoint

    path = checkpoint_path(uri, run_id)
    if not path.exists():
        raise DeepscopeError(f"no checkpoint for run {run_id} at {path}; only runs with [run] checkpoint_every, "
                             "checkpoint_every_steps or checkpoint_minutes set can resume (set "
                             "DEEPSCOPE_CHECKPOINT_DIR if the checkpoints live elsewhere)")
    payload = load_checkpoint(path)
    if payload["fingerprint"] != fingerprint:
        raise DeepscopeError(f"{pipeline.file} differs from the pipeline that run {run_id} was started with; "
                             "resume it with the same file (see the run's config/pipeline.toml artifact)")
    return payload


def run_pipeline(pipeline: Pipeline, host: PluginHost, *, console: Any = None, track: bool = True,
                 tracking_uri: str | None = None, extra_tags: dict[str, str] | None = None,
                 resume_run_id: str | None = None) -> RunResult:
    """Execute every stage of ``pipeline``; raise DeepscopeError (exit 2) or RunFailed (exit 1).

    With checkpointing on (``[run] checkpoint_every``, ``checkpoint_every_steps`` or
    ``checkpoint_minutes``, and tracking on) the run is checkpointed after every stage and inside
    loops that pass ``checkpoint=`` to ``ctx.epoch_end`` or ``ctx.step_end``. Each stage runs
    with ``state.data`` bound to the data its ``data`` key names.
    ``resume_run_id`` continues that MLflow run from its last checkpoint: finished stages
    are skipped, the interrupted one continues from its last checkpointed epoch, and
    metrics the killed run logged after that checkpoint are not logged twice.
    """
    import torch

    from .checkpoint import Checkpointer, checkpoint_path, restore_rng
    from .network import build_network
    from .stages import located
    from .state import RunState, StageContext, snapshot_state_dict
    from .tracking import MetricLedger, resolve_tracking_uri

    run = pipeline.run
    try:
        device = pick_device(run.device)
    except ConfigError as exc:
        raise ConfigError(exc.issues, file=pipeline.file) from None
    seed_everything(run.seed, run.deterministic)
    uri = resolve_tracking_uri(tracking_uri or run.tracking_uri)
    fingerprint = pipeline.fingerprint()
    resume = None
    if resume_run_id is not None:
        if not track:
            raise DeepscopeError("resuming needs tracking: the run to continue lives in MLflow")
        resume = _load_resume(pipeline, uri, resume_run_id, fingerprint)
    tracker = None
    checkpointer = None
    if track:
        tracker = MetricLedger(open_tracker(uri, run.experiment))
        if resume is not None:
            tracker.start(run.name, {}, run_id=resume_run_id)
        else:
            tracker.start(run.name, {**run_tags(pipeline, host, device), **(extra_tags or {})})
    status = "FAILED"
    state = None
    try:  # from here on the run exists in MLflow: whatever happens, it ends with a status
        if tracker is not None:
            if resume is not None:
                tracker.start_replay(resume["metric_counts"])
            else:
                tracker.log_params(pipeline.flat_params())
                tracker.log_bytes("config/pipeline.toml", dump_toml(pipeline.resolved()).encode())
            if run.checkpointing:
                checkpointer = Checkpointer(checkpoint_path(uri, tracker.run_id), fingerprint, tracker,
                                            every=run.checkpoint_every, every_steps=run.checkpoint_every_steps,
                                            minutes=run.checkpoint_minutes)
        try:
            data = pipeline.data.build()
            model = build_network(pipeline.model, data.info).to(device)
        except ConfigError as exc:
            raise ConfigError(exc.issues, file=pipeline.file) from None
        state = RunState(pipeline=pipeline, host=host, device=device, data=data, model=model,
                         tracker=tracker, console=console)
        state.init_state = snapshot_state_dict(model)
        first_stage = 0
        if resume is not None:
            state.load_state_dict(resume["state"])
            restore_rng(resume["rng"])
            first_stage = int(resume["next_stage"])
        host.hook.deepscope_run_started(run=state)
        for stage in pipeline.stages:
            if stage.index < first_stage:
                continue
            if console is not None:
                console.print(f"[bold]stage {stage.index}[/]: {stage.do} [cyan]{stage.name or stage.use}[/]")
            host.hook.deepscope_stage_started(run=state, stage=stage)
            mid_stage = resume if (resume is not None and stage.index == first_stage
                                   and (int(resume["stage_epoch"]) > 0 or int(resume["stage_step"]) > 0)) else None
            ctx = StageContext(state, stage, stage.key, checkpointer=checkpointer, resume_from=mid_stage)
            runner = located(host.registry.stage_kind(stage.do).resolve_runner())
            try:
                with state.using_data(stage.data):
                    runner(state, stage, ctx)
            except ConfigError as exc:
                raise ConfigError(exc.issues, file=pipeline.file) from None
            if ctx.resuming:
                raise RuntimeError(f"stage {stage.index} ({stage.key}) was checkpointed mid-stage but its component "
                                   "never called ctx.resume(...), so the resumed run cannot continue it")
            if checkpointer is not None:
                checkpointer.save(state, next_stage=stage.index + 1)
            host.hook.deepscope_stage_finished(run=state, stage=stage, metrics=dict(ctx.last_metrics))
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except DeepscopeError:
        raise
    except Exception as exc:
        raise RunFailed(f"{type(exc).__name__}: {exc}") from exc
    finally:
        if tracker is not None:
            tracker.finish(status)
        host.hook.deepscope_run_finished(run=state, status=status)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return RunResult(tracker.run_id if tracker else None, status, dict(state.latest), state, uri if track else None)
