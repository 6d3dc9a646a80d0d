"""What the SLURM scheduler says, for the slurm executor and ``sweep status``.

* ``sinfo``: what a partition's nodes have (CPUs, memory, GPUs), so the defaults fit the cluster and a
  request that no node can satisfy is flagged at submission instead of pending forever;
* ``squeue`` (then ``sacct`` where accounting is on): each array task's state and pending reason;
* a refused ``sbatch`` explained in one paragraph: which ``[sweep.slurm]`` key, and how to fix it;
* inside a task: whether the SIGTERM just received is a requeue (``Restarts`` went up) or a cancel.

Every query is best-effort: without the commands (a laptop, the fake-sbatch tests) they return None.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import attrs

from ..errors import DeepscopeError

#: SLURM states of a task that will not run again, and the point status each one means
ENDED = {"CANCELLED": "KILLED", "FAILED": "FAILED", "TIMEOUT": "FAILED", "NODE_FAIL": "FAILED",
         "OUT_OF_MEMORY": "FAILED", "BOOT_FAIL": "FAILED", "DEADLINE": "FAILED", "COMPLETED": "FAILED",
         "REVOKED": "KILLED", "SPECIAL_EXIT": "FAILED"}
#: how many CPUs a point asks for when ``cpus`` is not set (at most what a node has)
DEFAULT_CPUS = 4


def run_command(args: list[str], timeout: float = 30) -> str | None:
    """stdout of a scheduler command, or None when it is missing, fails or hangs."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


# -- the partition's nodes ---------------------------------------------------
@attrs.frozen
class NodeShape:
    """One node as ``sinfo`` reports it: CPUs, memory in MB and GPUs (from its gres)."""

    name: str
    cpus: int
    mem_mb: int
    gpus: int


def gres_gpus(gres: str) -> int:
    """GPUs in a ``sinfo %G`` gres string: ``gpu:a100:4(S:0-1),gpu:2`` -> 6; ``(null)`` -> 0."""
    total = 0
    for item in gres.split(","):
        fields = re.sub(r"\(.*?\)", "", item).strip().split(":")
        if fields[0] == "gpu":
            total += int(fields[-1]) if len(fields) > 1 and fields[-1].isdigit() else 1
    return total


def parse_sinfo(text: str, partition: str | None) -> list[NodeShape]:
    """Nodes of ``partition`` (None: the default partition, marked ``*``) in ``sinfo -h -N -o %N|%P|%c|%m|%G``."""
    nodes = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5:
            continue
        name, part, cpus, mem, gres = parts
        if (part.rstrip("*") == partition) if partition else part.endswith("*"):
            nodes.append(NodeShape(name, int(re.sub(r"\D", "", cpus) or 0), int(re.sub(r"\D", "", mem) or 0),
                                   gres_gpus(gres)))
    return nodes


def partition_nodes(partition: str | None) -> list[NodeShape] | None:
    """The partition's nodes, or None when ``sinfo`` cannot be asked."""
    text = run_command(["sinfo", "-h", "-N", "-o", "%N|%P|%c|%m|%G"])
    return None if text is None else parse_sinfo(text, partition)


def wants_cuda(devices: list[str]) -> bool:
    """Whether pipelines with these ``[run] device`` values would use a GPU given one (cuda, cuda:N, auto)."""
    return any(d == "auto" or d.startswith("cuda") for d in devices)


def default_resources(gpus: int | None, cpus: int | None, nodes: list[NodeShape] | None,
                      devices: list[str]) -> tuple[int, int]:
    """(gpus, cpus) per task: what the config says, else what fits the partition's nodes.

    No GPUs unless the pipelines would use CUDA and the partition's nodes have GPUs (without
    ``sinfo``: only when a pipeline asks for ``cuda`` explicitly); CPUs: 4, at most a node's count.
    """
    if gpus is None:
        if nodes is None:
            gpus = int(any(d.startswith("cuda") for d in devices))
        else:
            gpus = int(wants_cuda(devices) and any(n.gpus > 0 for n in nodes))
    if cpus is None:
        cpus = DEFAULT_CPUS if not nodes else max(1, min(DEFAULT_CPUS, max(n.cpus for n in nodes)))
    return gpus, cpus


def request_problems(partition: str | None, nodes: list[NodeShape] | None, *, cpus: int, gpus: int,
                     mem_gb: float | None) -> list[str]:
    """Why no node of the partition can run one task (empty when one can, or when sinfo is unknown)."""
    if nodes is None:
        return []
    where = f"partition {partition!r}" if partition else "the default partition"
    if not nodes:
        return [f"sinfo lists no nodes in {where}: set [sweep.slurm] partition to one `sinfo -s` shows"]
    fits = [n for n in nodes if n.cpus >= cpus and n.gpus >= gpus and (mem_gb is None or n.mem_mb >= mem_gb * 1024)]
    if fits:
        return []
    most = {"cpus": max(n.cpus for n in nodes), "gpus": max(n.gpus for n in nodes),
            "mem": max(n.mem_mb for n in nodes) / 1024}
    out = []
    if cpus > most["cpus"]:
        out.append(f"[sweep.slurm] cpus = {cpus} but the nodes of {where} have at most {most['cpus']} CPUs "
                   f"(set cpus <= {most['cpus']})")
    if gpus > most["gpus"]:
        out.append(f"[sweep.slurm] gpus = {gpus} but the nodes of {where} have at most {most['gpus']} GPUs "
                   f"(set gpus = {most['gpus']}, or pick a GPU partition)")
    if mem_gb is not None and mem_gb * 1024 > max(n.mem_mb for n in nodes):
        out.append(f"[sweep.slurm] mem_gb = {mem_gb:g} but the nodes of {where} have at most "
                   f"{most['mem']:.1f} GB (set mem_gb lower, or leave it unset)")
    if not out:
        out.append(f"no single node of {where} has cpus = {cpus}, gpus = {gpus} and mem_gb = {mem_gb} together")
    return [p + "; SLURM would hold every task PENDING (PartitionConfig) or refuse it" for p in out]


# -- a refused sbatch ----------------------------------------------------------
SBATCH_ERRORS = [  # (pattern in sbatch's message, key, how to fix it)
    (r"generic resource|gres", "gpus", "the partition has no GPUs of that kind: set [sweep.slurm] gpus = 0 "
                                       "(CPU-only partition) or pick a GPU partition with `partition`"),
    (r"invalid partition", "partition", "name one of the partitions `sinfo -s` lists"),
    (r"account", "account", "use an account `sacctmgr show assoc user=$USER` lists for you"),
    (r"qos", "qos", "use a QOS your account may use (`sacctmgr show assoc user=$USER format=qos`)"),
    (r"feature|constraint", "constraint", "use a feature that `sinfo -o '%N %f'` lists"),
    (r"time limit", "time", "ask for at most the partition's MaxTime (`sinfo -o '%P %l'`)"),
    (r"memory", "mem_gb", "ask for less memory than a node has (`sinfo -o '%N %m'`, in MB), or leave it unset"),
    (r"node configuration is not available|cpu count|cpus", "cpus",
     "ask for at most the CPUs, GPUs and memory one node of the partition has (`sinfo -N -o '%N %c %m %G'`)"),
]


def sbatch_message(exc: BaseException) -> str:
    """The ``sbatch: error: ...`` lines of a failed submission (all of the text when there are none)."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if "error" in ln.lower() and "sbatch" in ln.lower()]
    return " ".join(lines) if lines else " ".join(text.split())


def explain_sbatch_failure(exc: BaseException, params: dict[str, Any]) -> DeepscopeError:
    """One paragraph for a refused ``sbatch``: what it said, which ``[sweep.slurm]`` key, how to fix it."""
    message = sbatch_message(exc)
    asked = {"gpus": params.get("gpus_per_node", 0), "cpus": params.get("cpus_per_task"),
             "partition": params.get("slurm_partition"), "account": params.get("slurm_account"),
             "qos": params.get("slurm_qos"), "constraint": params.get("slurm_constraint"),
             "time": params.get("timeout_min"), "mem_gb": params.get("mem_gb")}
    for pattern, key, fix in SBATCH_ERRORS:
        if re.search(pattern, message, re.I):
            return DeepscopeError(f"sbatch refused the job array: {message}. It comes from $.sweep.slurm.{key} "
                                  f"(sent as {asked[key]!r}): {fix}. Nothing was submitted; fix the key and "
                                  "run `deepscope sweep FILE` again.")
    return DeepscopeError(f"sbatch refused the job array: {message}. The request was: "
                          + ", ".join(f"{k} = {v!r}" for k, v in asked.items() if v is not None)
                          + ". Compare it with what the partition offers (`sinfo -N -o '%N %P %c %m %G %l'`), "
                            "fix [sweep.slurm] and run `deepscope sweep FILE` again; nothing was submitted.")


# -- task states -----------------------------------------------------------------
@attrs.frozen
class TaskState:
    """One array task as the scheduler sees it."""

    state: str
    reason: str = ""
    restarts: int = 0

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def label(self) -> str:
        """``PENDING (PartitionConfig)``, ``REQUEUED (BeginTime)``, ``RUNNING``, ``CANCELLED``..."""
        state = self.state
        if state in ("PENDING", "REQUEUE_HOLD", "REQUEUE_FED") and self.restarts > 0:
            state = "REQUEUED"
        reason = self.reason if self.reason and self.reason not in ("None", "(null)") else ""
        return f"{state} ({reason})" if reason and not self.ended and state != "RUNNING" else state


SQUEUE_FORMAT = "JobArrayID:64,State:24,RestartCnt:8,Reason:256"


def parse_squeue(text: str) -> dict[str, TaskState]:
    out = {}
    for line in text.splitlines():
        fields = line.split(None, 3)
        if len(fields) >= 2:
            restarts = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 0
            out[fields[0]] = TaskState(fields[1], fields[3].strip() if len(fields) > 3 else "", restarts)
    return out


def parse_sacct(text: str) -> dict[str, TaskState]:
    out = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) >= 2 and "." not in fields[0]:  # skip the job steps (4242_0.batch)
            out[fields[0]] = TaskState(fields[1].split()[0] if fields[1] else "UNKNOWN",
                                       restarts=int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 0)
    return out


def squeue_text(arrays: list[str]) -> str | None:
    """``squeue`` lines for these arrays ("" when SLURM knows none of them), None when it cannot answer."""
    args = ["squeue", "-h", "-r", "-t", "all", "-j", ",".join(arrays), "-O", SQUEUE_FORMAT]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode == 0:
        return done.stdout
    return "" if "invalid job id" in done.stderr.lower() else None  # every array already purged


def task_states(job_ids: list[str]) -> dict[str, TaskState] | None:
    """Scheduler state of each job id (``4242_3``): squeue first, sacct for what squeue forgot.

    None when squeue cannot be asked. A job id left out is one SLURM no longer knows: it ended
    more than ``MinJobAge`` ago and accounting (sacct) is off or has no record of it.
    """
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return {}
    text = squeue_text(arrays)
    if text is None:
        return None
    states = parse_squeue(text)
    missing = [j for j in job_ids if j not in states]
    if missing:
        acct = run_command(["sacct", "-n", "-P", "-X", "-j", ",".join(sorted(set(missing))),
                            "-o", "JobID,State"])
        if acct:
            states.update({k: v for k, v in parse_sacct(acct).items() if k not in states})
    return states


def reconcile(record: Any) -> dict[str, str]:
    """Ask the scheduler about every point not FINISHED; return ``hash -> label`` for the status column.

    A point whose task SLURM ended (cancelled, failed, timed out, killed for memory) before the point
    wrote its end is marked KILLED or FAILED in its status file, so that it no longer looks SUBMITTED,
    the parent run can end, and the next ``deepscope sweep FILE`` runs it again.
    """
    from .record import TERMINAL

    open_points = {}
    for digest, point in record.points.items():
        job = str(point.get("job_id") or "")
        status = record.status(digest).get("status")
        if job and not job.startswith(("local:", "inline")) and status not in ("FINISHED", "PENDING"):
            open_points[digest] = job  # PENDING: no status file, so its job id is an old submission's
    if not open_points:
        return {}
    states = task_states(list(open_points.values()))
    if states is None:
        return {}
    labels = {}
    for digest, job in open_points.items():
        state = states.get(job)
        status = record.status(digest).get("status")
        if state is None:  # SLURM has forgotten the job, so it ended long ago
            if status not in TERMINAL:
                record.write_status(digest, status="FAILED", slurm_state="UNKNOWN",
                                    error=f"SLURM no longer knows job {job} and the point never wrote its end; "
                                          f"see {record.dir / 'slurm'}")
                labels[digest] = "GONE"
            continue
        if state.ended:
            if status not in TERMINAL:
                record.write_status(digest, status=ENDED[state.state], slurm_state=state.state,
                                    error=f"SLURM job {job} ended {state.state} before the point wrote its end; "
                                          f"see {record.dir / 'slurm'}")
            labels[digest] = state.state
        else:
            labels[digest] = state.label
    return labels


# -- inside a task -----------------------------------------------------------------
def being_requeued() -> bool:
    """In a SLURM task that got SIGTERM: True when it is a requeue (the job's Restarts went up).

    ``scontrol requeue`` and preemption with requeue raise ``Restarts`` before the signal; ``scancel``
    does not. Outside SLURM, or when scontrol cannot answer, False (the stop counts as a cancel).
    """
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    text = run_command(["scontrol", "show", "job", "-o", job], timeout=10)
    found = re.search(r"\bRestarts=(\d+)", text or "")
    if not found:
        return False
    return int(found.group(1)) > int(os.environ.get("SLURM_RESTART_COUNT") or 0)
