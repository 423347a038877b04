"""The device mesh: a data-parallel shard dim and an expert-parallel dim (torchtitan's layout).

    world = dp_shard × ep            mesh dims ("dp_shard", "ep"), plus the flattened "dp" = all ranks

Expert parallelism borrows from data parallelism: every rank reads distinct data (the loader's world is all ranks).
Routed experts are split over "ep"; ranks with the same "ep" coordinate hold the same experts, so expert gradients
are reduced over "dp_shard" only. Every other parameter is FSDP-sharded over "dp" (all ranks) and its gradients are
reduced over all ranks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from mythos.errors import SameOnEveryRank, UserError

if TYPE_CHECKING:  # mythos.config imports the model package; keep this module importable on its own
    from mythos.config import ParallelConfig
    from mythos.parallel.env import DistEnv

DP_SHARD, EP, DP = "dp_shard", "ep", "dp"


def mesh_shape(world_size: int, dp_shard: int, ep: int) -> tuple[int, int]:
    """(dp_shard, ep) for `world_size` ranks; dp_shard = -1 means world_size // ep. UserError naming the key."""
    if ep < 1 or world_size % ep:
        raise SameOnEveryRank(f"config key 'parallel.ep': {ep} must be >= 1 and divide the world size {world_size}")
    if dp_shard == -1:
        dp_shard = world_size // ep
    if dp_shard < 1 or dp_shard * ep != world_size:
        raise SameOnEveryRank(f"config key 'parallel.dp_shard': dp_shard ({dp_shard}) x ep ({ep}) must equal the world "
                        f"size {world_size} (or set dp_shard = -1)")
    return dp_shard, ep


def build_mesh(env: "DistEnv", cfg: "ParallelConfig") -> DeviceMesh | None:
    """The ("dp_shard", "ep") mesh with a flattened "dp" dim, or None for a single process (nothing to shard)."""
    dp_shard, ep = mesh_shape(env.world_size, cfg.dp_shard, cfg.ep)
    if env.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return None
    mesh = init_device_mesh(env.device.type, (dp_shard, ep), mesh_dim_names=(DP_SHARD, EP))
    _FLAT[id(mesh)] = mesh._flatten(DP)  # kept: slicing a flattened dim from the root mesh is deprecated
    return mesh


_FLAT: dict[int, DeviceMesh] = {}


def dp_mesh(mesh: DeviceMesh) -> DeviceMesh:
    """All ranks as one 1-D mesh: FSDP for the non-expert parameters."""
    return _FLAT.get(id(mesh)) or mesh._flatten(DP)
