"""parallelize(model, env, cfg): activation checkpointing -> compile -> FSDP2, applied from outside the model."""
from __future__ import annotations

import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

from mythos.config import ParallelConfig
from mythos.parallel.env import DistEnv


def apply_activation_checkpointing(model: torch.nn.Module, mode: str) -> None:
    """`loop` wraps the module that runs one loop iteration, so activation memory does not grow with T."""
    if mode == "none":
        return
    if mode == "loop" and hasattr(model, "recurrence"):
        model.recurrence = checkpoint_wrapper(model.recurrence, preserve_rng_state=False)
    elif mode in ("block", "loop", "selective"):
        for name in ("prelude", "coda", "layers"):
            blocks = getattr(model, name, None)
            if blocks is not None:
                for i, blk in enumerate(blocks):
                    blocks[i] = checkpoint_wrapper(blk, preserve_rng_state=False)
        if mode != "loop" and hasattr(model, "recurrence"):
            model.recurrence = checkpoint_wrapper(model.recurrence, preserve_rng_state=False)


def parallelize(model: torch.nn.Module, env: DistEnv, cfg: ParallelConfig) -> torch.nn.Module:
    model.to(env.device)
    apply_activation_checkpointing(model, cfg.ac)
    if cfg.compile:
        model.compile()
    if env.distributed:
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.device_mesh import init_device_mesh
        mesh = init_device_mesh(env.device.type, (env.world_size,), mesh_dim_names=("dp_shard",))
        for name in ("prelude", "coda", "layers"):
            for blk in getattr(model, name, None) or []:
                fully_shard(blk, mesh=mesh)
        if hasattr(model, "recurrence"):
            # gathered once per forward/backward, not once per loop
            fully_shard(model.recurrence, mesh=mesh, reshard_after_forward=False)
        fully_shard(model, mesh=mesh)
    return model
