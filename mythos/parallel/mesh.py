"""The device mesh: data-parallel replicate and shard dims and an expert-parallel dim (torchtitan's layout).

    world = dp_replicate × dp_shard × ep     mesh dims ("dp_replicate", "dp_shard", "ep"); "dp_replicate" only
                                              when > 1. A shard group = dp_shard × ep consecutive ranks (a node).

Expert parallelism borrows from data parallelism: every rank reads distinct data (the loader's world is all ranks).
Routed experts are split over "ep"; ranks with the same "ep" coordinate hold the same experts, so expert gradients
are reduced over "dp_shard" (and "dp_replicate"). Every other parameter is FSDP-sharded over "dp" = the flattened
(dp_shard, ep) = the shard group: all ranks without HSDP; with HSDP (dp_replicate > 1) the dense mesh is
("dp_replicate", "dp"): sharded inside a group, replicated across groups (FSDP2's hybrid sharding), so gradients are
reduce-scattered inside a group and all-reduced across groups.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from mythos.errors import SameOnEveryRank

if TYPE_CHECKING:  # mythos.config imports the model package; keep this module importable on its own
    from mythos.config import ParallelConfig
    from mythos.parallel.env import DistEnv

DP_REPLICATE, DP_SHARD, EP, DP = "dp_replicate", "dp_shard", "ep", "dp"


def mesh_shape(world_size: int, dp_shard: int, ep: int, dp_replicate: int = 1) -> tuple[int, int]:
    """(dp_shard, ep) for `world_size` ranks in `dp_replicate` groups; dp_shard = -1 means
    world_size // (dp_replicate · ep). SameOnEveryRank naming the key."""
    if dp_replicate < 1 or world_size % dp_replicate:
        raise SameOnEveryRank(f"config key 'parallel.dp_replicate': {dp_replicate} must be >= 1 and divide the world "
                              f"size {world_size}")
    group = world_size // dp_replicate
    if ep < 1 or group % ep:
        where = f"the shard group size {group} (world {world_size} / dp_replicate {dp_replicate})" \
            if dp_replicate > 1 else f"the world size {world_size}"
        raise SameOnEveryRank(f"config key 'parallel.ep': {ep} must be >= 1 and divide {where}")
    if dp_shard == -1:
        dp_shard = group // ep
    if dp_shard < 1 or dp_replicate * dp_shard * ep != world_size:
        raise SameOnEveryRank(f"config key 'parallel.dp_shard': dp_replicate ({dp_replicate}) x dp_shard "
                              f"({dp_shard}) x ep ({ep}) must equal the world size {world_size} (or set dp_shard = -1)")
    return dp_shard, ep


def mesh_dims(world_size: int, cfg: "ParallelConfig") -> dict[str, int]:
    """{"dp_replicate", "dp_shard", "ep"} sizes for `world_size` ranks (validated)."""
    dp_shard, ep = mesh_shape(world_size, cfg.dp_shard, cfg.ep, cfg.dp_replicate)
    return {DP_REPLICATE: cfg.dp_replicate, DP_SHARD: dp_shard, EP: ep}


def describe_mesh(world_size: int, cfg: "ParallelConfig") -> str:
    d = mesh_dims(world_size, cfg)
    hsdp = f"dp_replicate {d[DP_REPLICATE]} x " if d[DP_REPLICATE] > 1 else ""
    return f"world {world_size} = {hsdp}dp_shard {d[DP_SHARD]} x ep {d[EP]}"


def build_mesh(env: "DistEnv", cfg: "ParallelConfig") -> DeviceMesh | None:
    """The ([dp_replicate,] dp_shard, ep) mesh, or None for a single process (nothing to shard). Its dense mesh
    (`dp_mesh`) is built with it: the flattened "dp" (no HSDP), or a ("dp_replicate", "dp") mesh of the same ranks
    (HSDP; a mesh of its own, not a slice of a flattened dim, which torch deprecates)."""
    d = mesh_dims(env.world_size, cfg)
    if env.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return None
    kind = env.device.type
    if d[DP_REPLICATE] == 1:
        mesh = init_device_mesh(kind, (d[DP_SHARD], d[EP]), mesh_dim_names=(DP_SHARD, EP))
        _FLAT[id(mesh)] = mesh._flatten(DP)  # kept: slicing a flattened dim from the root mesh is deprecated
    else:
        mesh = init_device_mesh(kind, (d[DP_REPLICATE], d[DP_SHARD], d[EP]),
                                mesh_dim_names=(DP_REPLICATE, DP_SHARD, EP))
        _FLAT[id(mesh)] = init_device_mesh(kind, (d[DP_REPLICATE], d[DP_SHARD] * d[EP]),
                                           mesh_dim_names=(DP_REPLICATE, DP))
    return mesh


_FLAT: dict[int, DeviceMesh] = {}


def is_hsdp(mesh: DeviceMesh) -> bool:
    return DP_REPLICATE in (mesh.mesh_dim_names or ())


def dp_mesh(mesh: DeviceMesh) -> DeviceMesh:
    """The dense parameters' FSDP mesh: all ranks as one 1-D mesh, or with HSDP the 2-D ("dp_replicate", "dp")."""
    return _FLAT.get(id(mesh)) or mesh._flatten(DP)


def expert_dp_mesh(mesh: DeviceMesh) -> DeviceMesh:
    """The routed experts' FSDP mesh: "dp_shard", or with HSDP ("dp_replicate", "dp_shard")."""
    return mesh[DP_REPLICATE, DP_SHARD] if is_hsdp(mesh) else mesh[DP_SHARD]


def shard_group(mesh: DeviceMesh) -> DeviceMesh:
    """The 1-D mesh of this rank's shard group (the dense parameters' shard dim)."""
    dense = dp_mesh(mesh)
    return dense[DP] if dense.ndim > 1 else dense
