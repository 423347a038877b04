"""The SLURM rendezvous (srun without torchrun): submitit's TorchDistributedEnvironment plus a port that moves with
SLURM_RESTART_COUNT, so a requeued job restarting at once never meets its previous run's listener (EADDRINUSE)."""
from __future__ import annotations

import os

import pytest


def _rendezvous(monkeypatch, restart: int) -> dict:
    """One task's view of the rendezvous, computed in this process from a fresh SLURM environment (monkeypatch
    restores the environment afterwards): no interpreter start per case."""
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
              "SUBMITIT_EXECUTOR"):  # the function sets these: setenv first, so monkeypatch restores them too
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    for k, v in dict(SLURM_JOB_ID="1234", SLURM_PROCID="1", SLURM_NTASKS="2", SLURM_JOB_NODELIST="node[1-2]",
                     SLURM_RESTART_COUNT=str(restart), SLURM_LOCALID="0", SLURM_NTASKS_PER_NODE="1",
                     SLURM_JOB_NUM_NODES="2", SLURM_NODEID="1").items():
        monkeypatch.setenv(k, v)
    from mythos.parallel.env import _slurm_rendezvous
    _slurm_rendezvous()
    return {k: os.environ[k] for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")}


@pytest.mark.slow
def test_slurm_rendezvous_port_moves_with_restarts(monkeypatch):
    before = dict(os.environ)
    with monkeypatch.context() as m:
        first, again, requeued = (_rendezvous(m, r) for r in (0, 0, 1))
    assert dict(os.environ) == before  # nothing left for the next test's subprocesses (RANK would make them rank 1)
    assert first == again  # every rank of one run computes the same rendezvous
    assert (first["MASTER_ADDR"], first["RANK"], first["WORLD_SIZE"]) == ("node1", "1", "2")
    assert requeued["MASTER_PORT"] != first["MASTER_PORT"]
    assert all(20000 <= int(r["MASTER_PORT"]) < 60000 for r in (first, requeued))


def test_threads_follow_the_cpus_slurm_gives_each_task():
    from mythos.parallel.env import task_threads
    assert task_threads({}) is None  # not under SLURM: torch's default
    assert task_threads({"SLURM_CPUS_PER_TASK": "1", "SLURM_CPUS_ON_NODE": "2", "SLURM_NTASKS_PER_NODE": "2"}) == 1
    assert task_threads({"SLURM_CPUS_PER_TASK": "4"}) == 4
    assert task_threads({"SLURM_CPUS_ON_NODE": "2", "SLURM_NTASKS_PER_NODE": "2"}) == 1  # 2 tasks on a 2-CPU node
    assert task_threads({"SLURM_CPUS_ON_NODE": "16", "SLURM_TASKS_PER_NODE": "8(x2)"}) == 2
    assert task_threads({"SLURM_CPUS_ON_NODE": "3", "SLURM_NTASKS_PER_NODE": "4"}) == 1  # never 0
    assert task_threads({"OMP_NUM_THREADS": "1", "SLURM_CPUS_PER_TASK": "8"}) is None  # explicit: torch follows it
    assert task_threads({"OMP_NUM_THREADS": "", "SLURM_CPUS_PER_TASK": "3"}) == 3


def test_dist_env_applies_the_task_threads(monkeypatch):
    import torch

    from mythos.parallel.env import DistEnv
    before = torch.get_num_threads()
    for k in ("OMP_NUM_THREADS", "RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    torch.set_num_threads(2)  # not already 1 (make test runs pytest on one thread): the call must change it
    try:
        DistEnv.from_environment("cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
