"""FSDP2 (`fully_shard`) per block, then the root, with a reshard policy for the looped block.

The looped block runs T times per forward. FSDP2's defaults would all-gather it and reduce-scatter its gradients
once per call:
  * forward: `reshard_after_forward=False` keeps it unsharded across the T calls (one all-gather per forward);
  * backward: FSDP2 registers a post-backward hook on the inputs of every call; the first one to fire reduce-scatters
    and reshards, so the next (earlier) loop's backward all-gathers again. `_defer_post_backward` drops those per-call
    hooks for the looped block: its gradients accumulate across the loop calls in the unsharded parameters, and the
    root's end-of-backward callback (which runs `post_backward` for every group that has not run it) reduce-scatters
    and reshards once.
Result: 1 all-gather and 1 reduce-scatter of the looped block per forward/backward, for any T
(tests/parallel/test_fsdp_comm.py counts them).
"""
from __future__ import annotations

import contextlib
from collections import Counter
from typing import Iterator

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard


def mp_policy(mixed_precision: str) -> MixedPrecisionPolicy:
    """bf16: parameters all-gathered and computed in bf16, gradients reduced in fp32."""
    if mixed_precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def _defer_post_backward(module: FSDPModule) -> None:
    """Per-call post-backward hooks off: reduce-scatter once per backward from the root's final callback."""
    for group in module._get_fsdp_state()._fsdp_param_groups:
        group._register_post_backward_hook = lambda args, kwargs: (args, kwargs)


def blocks(model: nn.Module) -> list[nn.Module]:
    """The unique (run-once) blocks: prelude and coda (dense mode keeps its layers in `prelude`)."""
    out: list[nn.Module] = []
    for name in ("prelude", "coda", "layers"):
        out.extend(getattr(model, name, None) or [])
    return out


def apply_fsdp(model: nn.Module, mesh: DeviceMesh, mixed_precision: str = "fp32",
               ignored_params: list[nn.Parameter] | tuple = ()) -> nn.Module:
    """fully_shard each block over the 1-D `mesh`, the looped block with the once-per-step policy, then the root.
    `ignored_params` (expert-parallel weights) are left to expert parallelism."""
    mp = mp_policy(mixed_precision)
    ignored = set(ignored_params) or None
    for blk in blocks(model):
        fully_shard(blk, mesh=mesh, mp_policy=mp)
    recurrence = getattr(model, "recurrence", None)
    if recurrence is not None:
        fully_shard(recurrence, mesh=mesh, mp_policy=mp, reshard_after_forward=False, ignored_params=ignored)
        _defer_post_backward(recurrence)
    fully_shard(model, mesh=mesh, mp_policy=mp, ignored_params=ignored)
    return model


# ---- counting collectives (tests, benchmarks) ------------------------------------------------------------------------
_COUNTED = ("all_gather_single", "reduce_scatter_single", "all_gather_into_tensor", "reduce_scatter_tensor",
            "all_reduce", "all_to_all_single")


@contextlib.contextmanager
def count_collectives() -> Iterator[Counter]:
    """Counts calls of the torch.distributed collectives FSDP2 / expert parallelism use, by name."""
    counts: Counter = Counter()
    originals = {name: getattr(dist, name) for name in _COUNTED if hasattr(dist, name)}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    for name, fn in originals.items():
        setattr(dist, name, counted(name, fn))
    try:
        yield counts
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)
