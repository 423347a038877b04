"""parallelize(model, mesh, cfg): expert parallelism -> activation checkpointing -> compile -> FSDP2 per unit, then
the root (torchtitan's order), all applied from outside the model to the units its `parallel_plan()` names; a model
built on meta (meta_init.meta_device) is materialised last, shard by shard. Plus the gradient-norm clip that is
correct when parameters live on different meshes (FSDP over all ranks, experts over ("dp_shard", "ep")).
"""
from __future__ import annotations

import functools
import math
from collections import defaultdict
from typing import TYPE_CHECKING, Iterable

import torch
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from mythos.parallel.activation_checkpoint import apply_activation_checkpointing
from mythos.parallel.expert_parallel import apply_expert_parallel
from mythos.parallel.fsdp import apply_fsdp
from mythos.parallel.meta_init import is_meta, materialize

if TYPE_CHECKING:
    from mythos.config import ParallelConfig


def _units(model: nn.Module, plan) -> dict:
    """The plan's modules as they are now (after any wrapping: paths resolve through checkpoint wrappers)."""
    get = model.get_submodule
    looped = plan.looped
    return {"blocks": [get(p) for p in plan.blocks], "looped": get(looped) if looped else None,
            "experts": [get(p) for p in plan.experts],
            "looped_experts": {id(get(p)) for p in plan.experts if looped and p.startswith(looped + ".")}}


def apply_compile(model: nn.Module, plan=None) -> None:
    """torch.compile each block of the plan in place (`Module.compile`: parameter names unchanged)."""
    plan = plan or model.parallel_plan()
    for path in [*plan.blocks, *([plan.looped] if plan.looped else [])]:
        model.get_submodule(path).compile()


def expert_grad_sync(model: nn.Module, enabled: bool) -> None:
    """Gradient accumulation: call with False before every micro-batch but the last, True before the last. The
    expert units then stay gathered and accumulate unsharded gradients until the last backward: one all-gather and
    one reduce-scatter per optimizer step, whatever the micro-batch count (the other units keep FSDP2's
    per-backward reduce-scatter). No-op for a model without FSDP."""
    for ex in _units(model, model.parallel_plan())["experts"]:
        if isinstance(ex, FSDPModule):
            ex.set_requires_gradient_sync(enabled, recurse=False)
            ex.set_reshard_after_backward(enabled, recurse=False)


def _autocast_forward(forward, device_type: str):
    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return forward(*args, **kwargs)
    return wrapped


def parallelize(model: nn.Module, mesh: DeviceMesh | None, cfg: "ParallelConfig",
                device: torch.device | str = "cpu", dtype: str = "fp32") -> nn.Module:
    """Apply the parallelisms of `cfg` to `model` (in place; returned for chaining). `mesh` comes from
    `build_mesh(env, cfg)`; None means a single process: AC and compile only. `dtype` (train.dtype) "bf16": FSDP's
    bf16 parameter policy, or with no mesh bf16 autocast around the forward."""
    plan = model.parallel_plan()
    on_meta = is_meta(model)
    if not on_meta and any(p.device != torch.device(device) for p in model.parameters()):
        model.to(device)
    if mesh is not None:
        apply_expert_parallel(_units(model, plan)["experts"], mesh)
    apply_activation_checkpointing(model, cfg.ac, plan)
    if cfg.compile:
        apply_compile(model, plan)
    if mesh is not None:
        apply_fsdp(model, mesh, _units(model, plan), dtype)
    elif dtype == "bf16":
        model.forward = _autocast_forward(model.forward, torch.device(device).type)
    if on_meta:
        materialize(model, device)
    return model


# ---- gradient norm over mixed meshes ---------------------------------------------------------------------------------
def _mesh_key(g: torch.Tensor):
    return (id(g.device_mesh), tuple(g.placements)) if isinstance(g, DTensor) else None


@torch.no_grad()
def grad_norm(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm of the gradients: per (mesh, placements) group a DTensor norm reduced with full_tensor(), then
    combined. Every rank gets the same value."""
    groups: dict = defaultdict(list)
    for p in params:
        if p.grad is not None:
            groups[_mesh_key(p.grad)].append(p.grad)
    norms = []
    for grads in groups.values():
        n = torch.nn.utils.get_total_norm(grads, 2.0, error_if_nonfinite=False, foreach=None)
        norms.append(n.full_tensor() if isinstance(n, DTensor) else n)
    if not norms:
        return torch.zeros(())
    return norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))


@torch.no_grad()
def clip_grad_norm(model_or_params: nn.Module | Iterable[torch.Tensor], max_norm: float) -> float:
    """Clip all gradients to a global norm `max_norm` (<= 0: no clipping); returns the pre-clip norm."""
    params = list(model_or_params.parameters() if isinstance(model_or_params, nn.Module) else model_or_params)
    total = grad_norm(params)
    if max_norm > 0 and math.isfinite(float(total)):
        by_group: dict = defaultdict(list)
        for p in params:
            if p.grad is not None:
                by_group[_mesh_key(p.grad)].append(p)
        for group in by_group.values():
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total, foreach=None)
    return float(total)
