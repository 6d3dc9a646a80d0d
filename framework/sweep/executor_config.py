"""Config classes of the built-in executors: the ``[sweep.local]`` and ``[sweep.slurm]`` tables."""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from ..params import non_negative, param, positive


@attrs.define
class InlineConfig:
    """Runs every point one after another in this process (debugging, tiny sweeps)."""


@attrs.define
class LocalConfig:
    """N worker processes on this machine; each takes the next unclaimed point."""

    gpus_per_worker: int = param(1, doc="GPUs each worker sees (CUDA_VISIBLE_DEVICES), when there are GPUs",
                                 validator=positive)


@attrs.define
class SlurmConfig:
    """One SLURM job array through submitit (``pip install 'deepscope[slurm]'``)."""

    partition: Optional[str] = param(None, doc="SLURM partition")
    time: int = param(60, doc="time limit per point, in minutes", validator=positive)
    gpus: Optional[int] = param(None, doc="GPUs per job (--gpus-per-node); default: 1 when the pipeline would use "
                                          "CUDA (device auto or cuda) and sinfo shows GPUs in the partition, else 0",
                                validator=non_negative)
    cpus: Optional[int] = param(None, doc="CPUs per job (--cpus-per-task); default: 4, at most what a node of the "
                                          "partition has (sinfo)", validator=positive)
    mem_gb: Optional[float] = param(None, doc="memory per job in GB")
    account: Optional[str] = param(None, doc="SLURM account")
    qos: Optional[str] = param(None, doc="quality of service")
    constraint: Optional[str] = param(None, doc="node constraint")
    array_parallelism: int = param(256, doc="array tasks running at once (--array=0-N%P); [sweep] workers "
                                             "overrides it", validator=positive)
    requeue: bool = param(True, doc="requeue on preemption or timeout; a requeued point resumes from its "
                                    "last checkpoint")
    max_requeues: int = param(3, doc="how many times a point may be requeued after a timeout",
                              validator=non_negative)
    setup: list[str] = param(attrs.Factory(list), doc="shell lines run before each job (module load, venv)")
    additional: dict = param(attrs.Factory(dict), doc="extra #SBATCH flags, e.g. { mail-type = \"END\" }")
    cluster: Literal["slurm", "local", "debug"] = param(
        "slurm", doc="submitit backend: slurm, or local/debug to try the array on this machine")
