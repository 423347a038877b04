"""FSDP2 (`fully_shard`) per unit of the model's parallel plan: routed experts on their own mesh, run-once blocks,
the looped block, then the root.

Units and meshes (torchtitan's layout):
  * routed experts: over "dp_shard" (the data-parallel ranks that hold the same experts), on top of their Shard(0)
    over "ep"; so every rank holds 1/(dp_shard·ep) of the experts and of their AdamW state. Their gradients are
    averaged over dp_shard (the expert-parallel all-to-all already summed them over ep, expert_parallel.py);
  * every other parameter: over "dp" (all ranks).
With HSDP (parallel.dp_replicate > 1, mesh.py) both get a leading "dp_replicate" mesh dim: FSDP2's hybrid sharding
(a 2-D mesh to `fully_shard`) shards inside a group and replicates across groups; gradients are reduce-scattered
inside a group, then all-reduced across groups. The loop-aware policy below is the same for both.

The looped block (and experts inside it) runs T times per forward. FSDP2's defaults would all-gather it and
reduce-scatter its gradients once per call:
  * forward: `reshard_after_forward=False` keeps it unsharded across the T calls (one all-gather per forward);
  * backward: FSDP2 registers a post-backward hook on the inputs of every call; the first one to fire reduce-scatters
    and reshards, so the next (earlier) loop's backward all-gathers again. `_defer_post_backward` drops those per-call
    hooks: gradients accumulate across the loop calls in the unsharded parameters, and the root's end-of-backward
    callback (which runs `post_backward` for every group that has not run it) reduce-scatters and reshards once.
    This overrides a private FSDP2 attribute, so it is pinned to the torch versions it is tested on
    (TESTED_TORCH; any other version fails in one line).
Result: 1 all-gather and 1 reduce-scatter of the looped block per forward/backward, for any T
(tests/parallel/test_fsdp_comm.py counts them). Across micro-batches, `expert_grad_sync(model, False)` makes the
expert units accumulate instead of reducing, so experts are reduced once per optimizer step.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import Shard

from mythos.errors import UserError
from mythos.parallel.mesh import DP_SHARD, EP, dp_mesh, expert_dp_mesh

TESTED_TORCH = ("2.13",)  # the `_defer_post_backward` override below is tested on these torch versions only


def check_torch_version(version: str = torch.__version__) -> None:
    if ".".join(version.split(".")[:2]) not in TESTED_TORCH:
        raise UserError(f"parallel: the loop-aware FSDP2 policy is tested on torch {', '.join(TESTED_TORCH)} only, "
                        f"found {version} (run single-process or install a tested torch)")


def mp_policy(dtype: str) -> MixedPrecisionPolicy:
    """bf16 (train.dtype): parameters all-gathered and computed in bf16, gradients reduced in fp32."""
    if dtype == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def _defer_post_backward(module: FSDPModule) -> None:
    """Per-call post-backward hooks off: reduce-scatter once per backward from the root's final callback."""
    for group in module._get_fsdp_state()._fsdp_param_groups:
        group._register_post_backward_hook = lambda args, kwargs: (args, kwargs)


def _expert_placement(dp_shard: int):
    """Experts are already Shard(0) over ep: FSDP shards them on dim 1 when it splits evenly (plain 2-D DTensor),
    else on dim 0 (torch composes a strided shard)."""
    def fn(param: nn.Parameter):
        return Shard(1) if param.dim() > 1 and param.shape[1] % dp_shard == 0 else None
    return fn


def apply_fsdp(model: nn.Module, mesh: DeviceMesh, units: dict, dtype: str = "fp32") -> nn.Module:
    """`units` = {"experts": [...], "blocks": [...], "looped": module | None, "looped_experts": set of ids}."""
    check_torch_version()
    mp = mp_policy(dtype)
    dp, expert_mesh = dp_mesh(mesh), expert_dp_mesh(mesh)
    ep = mesh[EP].size()
    for ex in units["experts"]:
        looped = id(ex) in units["looped_experts"]
        fully_shard(ex, mesh=expert_mesh, mp_policy=mp, reshard_after_forward=not looped,
                    shard_placement_fn=_expert_placement(mesh[DP_SHARD].size()) if ep > 1 else None)
        if looped:
            _defer_post_backward(ex)
    for blk in units["blocks"]:
        fully_shard(blk, mesh=dp, mp_policy=mp)
    if units["looped"] is not None:
        fully_shard(units["looped"], mesh=dp, mp_policy=mp, reshard_after_forward=False)
        _defer_post_backward(units["looped"])
    fully_shard(model, mesh=dp, mp_policy=mp)
    return model
