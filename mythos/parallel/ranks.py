"""Who am I and do we all agree: the rank helpers every layer uses (checkpoints, the watchdog, stop signals, metrics),
written once. Without a process group a process is rank 0 of 1 and every "agreement" is its own value."""
from __future__ import annotations

import torch
import torch.distributed as dist


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if distributed() else 0


def world() -> int:
    return dist.get_world_size() if distributed() else 1


def barrier() -> None:
    if distributed():
        dist.barrier()


def agree(problem: tuple[str, str] | None) -> tuple[str, str] | None:
    """The first rank's (kind, message) problem, the same on every rank (None when no rank had one)."""
    if not distributed():
        return problem
    everyone: list = [None] * world()
    dist.all_gather_object(everyone, problem)
    return next((p for p in everyone if p is not None), None)


def gather_objects(obj, group=None) -> list:
    """Every rank's `obj`, in rank order (on `group`: a side group, e.g. the watchdog's)."""
    if not distributed():
        return [obj]
    everyone: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, obj, group=group)
    return everyone


def any_rank(device: torch.device, *flags: bool) -> list[bool]:
    """Each flag OR-ed over the ranks (one all-reduce)."""
    t = torch.tensor([float(f) for f in flags], device=device)
    if distributed():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if distributed():
        dist.all_reduce(t)
    return t


def all_reduce_mean(t: torch.Tensor) -> float | list[float]:
    """Mean over ranks as Python floats (one collective for a whole vector of metrics)."""
    t = t.detach().clone()
    if distributed():
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t.tolist()
