"""Process-group setup from the launcher's environment (torchrun, or srun's SLURM_* variables)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from mythos.errors import UserError


def _env_int(*names: str, default: int) -> int:
    for n in names:
        if n in os.environ:
            return int(os.environ[n])
    return default


def _slurm_rendezvous() -> None:
    """Under `srun` without torchrun (one task per process: the sbatch template or submitit), take the rendezvous
    from SLURM through submitit's TorchDistributedEnvironment: the job's first node is the master, the port a
    function of the job id and its restart count (so concurrent jobs and a job's quick restarts do not collide);
    MASTER_ADDR/MASTER_PORT already set are kept."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1 or "SLURM_PROCID" not in os.environ:
        return
    from submitit.helpers import TorchDistributedEnvironment

    os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")  # how submitit knows its environment (set in its scripts)
    found = TorchDistributedEnvironment()
    os.environ.setdefault("MASTER_ADDR", found.master_addr)
    # submitit's port is a function of the job id alone; a requeued job that restarts at once would find the port
    # still held by its previous run's exiting rank 0 (EADDRINUSE, seen in the tests): move it with each restart.
    restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    os.environ.setdefault("MASTER_PORT", str(20000 + (found.master_port - 20000 + 101 * restart) % 40000))
    os.environ.update(RANK=str(found.rank), WORLD_SIZE=str(found.world_size), LOCAL_RANK=str(found.local_rank),
                      LOCAL_WORLD_SIZE=str(found.local_world_size))


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls, device: str = "auto", timeout_s: float | None = None) -> "DistEnv":
        """`timeout_s`: the process group's collective timeout (None: torch's default)."""
        _slurm_rendezvous()
        rank = _env_int("RANK", default=0)
        world = _env_int("WORLD_SIZE", default=1)
        local = _env_int("LOCAL_RANK", default=0)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise UserError("config key 'train.device': 'cuda' requested but no CUDA device is available")
        dev = torch.device("cuda", local) if device == "cuda" else torch.device("cpu")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        threads = task_threads()
        if threads is not None and threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                    device_id=dev if dev.type == "cuda" else None,
                                    timeout=timedelta(seconds=timeout_s) if timeout_s else None)
        return cls(rank, world, local, dev)

    def shutdown(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # without it a flaky SIGABRT at exit was seen (design note §3)
            dist.destroy_process_group()


def task_threads(environ=None) -> int | None:
    """Intra-op threads for this process: SLURM's CPUs per task (SLURM_CPUS_PER_TASK, else the node's CPUs shared by
    its tasks), so tasks sharing a node do not oversubscribe it; None to leave torch as it is: outside SLURM, or
    with an explicit OMP_NUM_THREADS (torchrun sets 1 per worker), which torch already follows."""
    env = os.environ if environ is None else environ
    if env.get("OMP_NUM_THREADS", "").strip():
        return None
    if env.get("SLURM_CPUS_PER_TASK", "").isdigit() and int(env["SLURM_CPUS_PER_TASK"]) > 0:
        return int(env["SLURM_CPUS_PER_TASK"])
    cpus, tasks = env.get("SLURM_CPUS_ON_NODE", ""), env.get("SLURM_NTASKS_PER_NODE", "")
    if not tasks.isdigit():  # SLURM_TASKS_PER_NODE: "2(x3),1" -> this node's count is not known; take the first
        head = env.get("SLURM_TASKS_PER_NODE", "").split(",")[0].split("(")[0]
        tasks = head if head.isdigit() else ""
    if cpus.isdigit() and tasks.isdigit() and int(tasks) > 0:
        return max(1, int(cpus) // int(tasks))
    return None
