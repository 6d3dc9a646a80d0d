"""The built-in executors: ``inline``, ``local`` and ``slurm``.

An executor is registered through ``deepscope_register_executors(register)``
as ``register(name, factory, config_cls)``; ``factory(config)`` returns an
object with ``detaches: bool`` and ``submit(submission)``. ``submit`` starts
every point of ``submission.hashes``, records each job id with
``submission.record.set_job(hash, job_id)``, and either waits for them
(``detaches = False``) or returns right after submitting (``detaches = True``,
then ``deepscope sweep status DIR`` reattaches). Workers run points through
:func:`deepscope.sweep.worker.run_point`, which writes each point's status.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
import warnings
from typing import Any

import attrs

from ..errors import DeepscopeError
from .record import TERMINAL, SweepRecord, owner_alive, worker_owner


@attrs.define
class Submission:
    """What an executor gets: the record, the points to run, the parallelism asked for."""

    record: SweepRecord
    hashes: list[str]
    workers: int | None = None
    host: Any = None
    console: Any = None

    def worker_command(self, hashes: list[str]) -> list[str]:
        return [sys.executable, "-m", "deepscope.sweep.worker", str(self.record.dir), *hashes]

    def print(self, *args: Any) -> None:
        if self.console is not None:
            self.console.print(*args)


class InlineExecutor:
    """Every point in this process, one after another."""

    detaches = False

    def __init__(self, config: Any = None):
        self.config = config

    def submit(self, submission: Submission) -> None:
        from .worker import run_point

        record = submission.record
        for digest in submission.hashes:
            record.set_job(digest, "inline")
        record.save()
        for digest in submission.hashes:
            submission.print(f"point {record.points[digest]['index']} [dim]{digest}[/]")
            run_point(record, digest, submission.host, console=submission.console)


def gpu_count() -> int:
    """GPUs visible to this process (0 without CUDA)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class LocalExecutor:
    """N worker processes on this machine (N: ``[sweep] workers``, else one per GPU, else 1).

    Each worker gets the whole list and claims points one at a time, so a fast
    worker takes more of them; worker i sees GPUs ``i*g .. i*g+g-1`` (g =
    ``gpus_per_worker``, wrapping around). Output goes to ``DIR/logs/worker-i.log``.
    This executor waits for its workers; Ctrl-C stops them and marks their
    unfinished points KILLED.
    """

    detaches = False

    def __init__(self, config: Any = None):
        self.config = config
        self.poll_s = 0.2

    def submit(self, submission: Submission) -> None:
        record = submission.record
        held = set(record.release_claims(list(submission.hashes)))
        if held:
            submission.print(f"leaving {len(held)} point(s) to the live workers of another `deepscope sweep` on "
                             f"{record.dir}")
        hashes = [h for h in submission.hashes if h not in held]
        if not hashes:
            return
        gpus = gpu_count()
        workers = submission.workers or max(gpus, 1)
        workers = max(1, min(workers, len(hashes)))
        per_worker = getattr(self.config, "gpus_per_worker", 1)
        procs: list[tuple[subprocess.Popen, Any]] = []
        interrupted = False
        record.log_path("worker-0").parent.mkdir(parents=True, exist_ok=True)
        try:
            for i in range(workers):
                env = dict(os.environ)
                if gpus:
                    env["CUDA_VISIBLE_DEVICES"] = ",".join(str((i * per_worker + j) % gpus) for j in range(per_worker))
                log = open(record.log_path(f"worker-{i}"), "ab")  # noqa: SIM115 - closed below
                proc = subprocess.Popen(submission.worker_command(hashes), env=env, stdout=log,
                                        stderr=subprocess.STDOUT, cwd=os.getcwd())
                procs.append((proc, log))
            for digest in hashes:
                record.set_job(digest, "local:" + ",".join(str(p.pid) for p, _ in procs))
            record.save()
            submission.print(f"{len(procs)} local workers on {len(hashes)} points; logs in {record.dir / 'logs'}")
            while any(p.poll() is None for p, _ in procs):
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            interrupted = True
            for proc, _ in procs:  # SIGINT: the runs end KILLED in MLflow and in their status files
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
            for proc, _ in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
            raise
        finally:
            for _, log in procs:
                log.close()
            codes = ", ".join(str(p.returncode) for p, _ in procs)
            ours = {worker_owner(p.pid) for p, _ in procs}
            for digest in hashes:  # a worker that died hard, or never started, leaves points without an end
                if record.status(digest).get("status") in TERMINAL:
                    continue
                owner = record.claim_owner(digest)
                if owner and owner not in ours and owner_alive(owner):
                    continue  # another invocation's live worker took it after our release: its point
                claimed = owner is not None
                reason = ("the worker process ended before the point did" if claimed
                          else f"no worker ran this point (worker exit codes: {codes})")
                record.write_status(digest, status="KILLED" if interrupted else "FAILED",
                                    error=f"{reason}; see {record.dir / 'logs'}")


class SweepJob:
    """The callable submitit pickles for each array task: runs one point by its hash, exactly once.

    A task whose point already ended FINISHED (a requeue that landed after the point finished, a
    resubmission) returns at once: no second MLflow run. SIGTERM from the scheduler stops the run
    at once (submitit alone would log "Bypassing signal SIGTERM" and train on through the kill-wait):
    on ``scancel`` the point and its MLflow run end KILLED; on a requeue (``scontrol requeue``,
    preemption) the point goes back to SUBMITTED and the restarted task resumes the same MLflow run
    from its last checkpoint. On submitit's timeout signal (USR2) :meth:`checkpoint` requeues the
    same point, which resumes the same way.
    """

    def __init__(self, sweep_dir: str):
        self.sweep_dir = sweep_dir

    def __call__(self, digest: str) -> str:
        from .slurm import being_requeued
        from .worker import run_point, worker_host

        record = SweepRecord.open(self.sweep_dir)
        if record.status(digest).get("status") == "FINISHED":
            print(f"sweep point {digest} already FINISHED ({record.status(digest).get('run_id')}): nothing to do",
                  flush=True)
            return "FINISHED"
        previous = stop_on_first_sigterm()  # replaces submitit's SIGTERM bypass: stop now, resume on restart
        try:
            status = run_point(record, digest, worker_host())
        except KeyboardInterrupt:
            if being_requeued():
                record.write_status(digest, status="SUBMITTED", requeued=True,
                                    error="stopped by SIGTERM for a requeue; the restarted task resumes it")
                print(f"sweep point {digest} stopped for a requeue", flush=True)
                return "REQUEUED"
            if not os.environ.get("SLURM_JOB_ID"):
                raise  # Ctrl-C outside SLURM
            raise RuntimeError(f"sweep point {digest} was stopped by SIGTERM (scancel); it ended KILLED") from None
        finally:
            signal.signal(signal.SIGTERM, previous)
        if status != "FINISHED":
            raise RuntimeError(f"sweep point {digest} ended {status}; see {record.status_path(digest)}")
        return status

    def checkpoint(self, digest: str) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(SweepJob(self.sweep_dir), digest)


def stop_on_first_sigterm() -> Any:
    """SIGTERM raises KeyboardInterrupt once (the run ends KILLED); later ones are ignored so the cleanup
    finishes. Returns the handler it replaced."""
    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, stop)


class SlurmExecutor:
    """One SLURM job array through submitit; returns as soon as the array is submitted.

    Unset ``gpus`` and ``cpus`` are fitted to the partition's nodes (``sinfo``, see
    :func:`deepscope.sweep.slurm.default_resources`); a request no node can satisfy is warned about
    at submission, and a refused ``sbatch`` becomes one :class:`DeepscopeError` naming the key.
    """

    detaches = True

    def __init__(self, config: Any = None):
        from .executor_config import SlurmConfig

        self.config = config if config is not None else SlurmConfig()

    def resources(self, submission: Submission) -> tuple[int, int, list[str]]:
        """(gpus, cpus, warnings) for one task, from the config and what the partition's nodes have."""
        from .slurm import default_resources, partition_nodes, request_problems

        cfg = self.config
        if cfg.cluster != "slurm":
            return (cfg.gpus or 0), (cfg.cpus or 4), []
        nodes = partition_nodes(cfg.partition)
        gpus, cpus = default_resources(cfg.gpus, cfg.cpus, nodes, point_devices(submission))
        return gpus, cpus, request_problems(cfg.partition, nodes, cpus=cpus, gpus=gpus, mem_gb=cfg.mem_gb)

    def parameters(self, submission: Submission, gpus: int | None = None, cpus: int | None = None) -> dict[str, Any]:
        cfg = self.config
        gpus = (cfg.gpus or 0) if gpus is None else gpus
        cpus = (cfg.cpus or 4) if cpus is None else cpus
        params: dict[str, Any] = {
            "name": f"deepscope-{submission.record.data.get('name', 'sweep')}",
            "timeout_min": cfg.time,
            "cpus_per_task": cpus,
            "tasks_per_node": 1,
            "nodes": 1,
        }
        if gpus:
            params["gpus_per_node"] = gpus
        if cfg.mem_gb is not None:
            params["mem_gb"] = cfg.mem_gb
        if cfg.cluster == "slurm":
            slurm = {
                "partition": cfg.partition, "account": cfg.account, "qos": cfg.qos, "constraint": cfg.constraint,
                "array_parallelism": submission.workers or cfg.array_parallelism,
                "setup": list(cfg.setup) or None,
                "additional_parameters": {**({"requeue": True} if cfg.requeue else {}), **cfg.additional} or None,
            }
            params.update({f"slurm_{k}": v for k, v in slurm.items() if v is not None})
        return params

    def submit(self, submission: Submission) -> None:
        try:
            import submitit
        except ImportError:
            raise DeepscopeError("the slurm executor needs submitit: pip install 'deepscope[slurm]'") from None
        from .slurm import explain_sbatch_failure

        record = submission.record
        gpus, cpus, problems = self.resources(submission)
        for problem in problems:
            if submission.console is not None:
                from rich.markup import escape

                submission.print(f"[yellow]warning[/]: {escape(problem)}")
            else:
                warnings.warn(problem, stacklevel=2)
        params = self.parameters(submission, gpus, cpus)
        folder = record.dir / "slurm" / "%j"
        executor = submitit.AutoExecutor(folder=folder, cluster=self.config.cluster,
                                         slurm_max_num_timeout=self.config.max_requeues)
        executor.update_parameters(**params)
        hashes = list(submission.hashes)
        for digest in hashes:  # before submitting: a task that starts at once must not be overwritten
            record.write_status(digest, status="SUBMITTED")
        said = io.StringIO()  # submitit prints a refusing sbatch's stderr: it goes into the explanation instead
        try:
            with contextlib.redirect_stderr(said):
                jobs = executor.map_array(SweepJob(str(record.dir)), hashes)
        except Exception as exc:  # sbatch refused: bad partition, account, limits...
            for digest in hashes:
                record.status_path(digest).unlink(missing_ok=True)
            raise explain_sbatch_failure(exc, params) from None
        if said.getvalue():
            sys.stderr.write(said.getvalue())
        for digest, job in zip(hashes, jobs):
            record.set_job(digest, str(job.job_id))
        record.save()
        submission.print(f"submitted {len(jobs)} points as job array {jobs[0].job_id.split('_')[0] if jobs else '-'}"
                         f" ({cpus} CPUs, {gpus} GPUs each); follow it with: deepscope sweep status {record.dir}")


def point_devices(submission: Submission) -> list[str]:
    """The ``[run] device`` of every point to submit (read from the resolved configs)."""
    import tomllib

    devices = []
    for digest in submission.hashes:
        try:
            doc = tomllib.loads(submission.record.config_path(digest).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        devices.append(str(doc.get("run", {}).get("device", "auto")))
    return devices
