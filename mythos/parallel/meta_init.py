"""Build on `meta`, parallelize, then materialise shard by shard: no rank ever holds the whole model.

    torch.manual_seed(seed)
    with meta_device():                      # parameters on meta; the CPU generator advances exactly as the eager
        model = Mythos(cfg)                  # constructor's draws would have advanced it
    parallelize(model, mesh, cfg, device)    # sees the meta parameters, calls materialize() last

`materialize` allocates this rank's shards (`to_empty`) and calls the model's own `init_weights(write=...)`, which
makes one parameter at a time in a full-size scratch tensor, in the eager order, and keeps this rank's shard of it
(`distribute_tensor(..., src_data_rank=None)`: a local slice, no communication). The initial weights are therefore
bitwise those of `torch.manual_seed(seed); Mythos(cfg)` on every rank layout (tests/parallel/test_meta_init.py).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn as nn
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten
_RANDOM_INPLACE = {getattr(op, overload)
                   for op in (_aten.uniform_, _aten.normal_, _aten.bernoulli_, _aten.random_, _aten.exponential_,
                              _aten.log_normal_, _aten.cauchy_, _aten.geometric_)
                   for overload in op.overloads()}


class _ReplayRandomOnCPU(TorchDispatchMode):
    """A random fill of a meta tensor is replayed on a same-shaped CPU scratch tensor and thrown away, so the global
    CPU generator ends where an eager construction would leave it (one tensor at a time, never the whole model)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RANDOM_INPLACE and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            scratch = torch.empty(args[0].shape, dtype=args[0].dtype, device="cpu")
            func(scratch, *args[1:], **kwargs)
        return func(*args, **kwargs)


@contextlib.contextmanager
def meta_device() -> Iterator[None]:
    """Construct modules on `meta` while keeping the CPU generator in step with an eager build."""
    with torch.device("meta"), _ReplayRandomOnCPU():
        yield


def is_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def _keep_local_shard(param: nn.Parameter, full: torch.Tensor) -> None:
    if isinstance(param, DTensor):
        full = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
    param.copy_(full)


@torch.no_grad()
def materialize(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Allocate this rank's shards on `device` and fill them with the model's initial values."""
    ties = _tied_parameters(model)
    model.to_empty(device=device)
    for (owner, name), (src_owner, src_name) in ties:  # to_empty gives every module its own tensor
        setattr(owner, name, getattr(src_owner, src_name))
    model.init_weights(write=_keep_local_shard)
    return model


def _tied_parameters(model: nn.Module) -> list[tuple[tuple[nn.Module, str], tuple[nn.Module, str]]]:
    first: dict[int, tuple[nn.Module, str]] = {}
    ties = []
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            if id(p) in first:
                ties.append(((mod, name), first[id(p)]))
            else:
                first[id(p)] = (mod, name)
    return ties
