"""Activation checkpointing policies (`parallel.ac`), applied from outside the model, non-reentrant.

    none       keep every activation
    loop       (default) checkpoint each loop iteration: the plan's looped block runs ONE iteration per call, so
               wrapping it stores only the loop state h_t per iteration and activation memory does not grow with T
               (dense mode, which has no loop: every block, as `block`)
    block      every block of the model's parallel plan (prelude, coda; dense: all layers) and the loop iteration
    selective  like `block`, but keeps the outputs of the expensive ops (matmuls, attention, grouped expert matmuls)
               and recomputes only the cheap ones (norms, activations, elementwise): torchtitan's op-level SAC

Truncated backprop composes: loops before the last `backprop_k` run under no_grad, so the non-reentrant checkpoint
saves nothing for them and nothing is recomputed (tests/parallel/test_activation_checkpoint.py counts the calls).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper, checkpoint_wrapper
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

import mythos.model.grouped  # noqa: F401  (registers torch.ops.mythos.expert_mm)
from mythos.errors import UserError

MODES = ("none", "loop", "block", "selective")

_SAVE_OP_NAMES = ("mm", "addmm", "bmm", "_grouped_mm", "_scaled_dot_product_flash_attention",
                  "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention_for_cpu")
_SAVE_OPS = {getattr(torch.ops.aten, n).default for n in _SAVE_OP_NAMES if hasattr(torch.ops.aten, n)}
_SAVE_OPS.add(torch.ops.mythos.expert_mm.default)  # the routed experts' grouped matmuls


def _selective_policy(ctx, op, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if op in _SAVE_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _wrap(module: nn.Module, selective: bool) -> nn.Module:
    if isinstance(module, CheckpointWrapper):
        return module
    if selective:
        return checkpoint_wrapper(module, preserve_rng_state=False,
                                  context_fn=partial(create_selective_checkpoint_contexts, _selective_policy))
    return checkpoint_wrapper(module, preserve_rng_state=False)


def apply_activation_checkpointing(model: nn.Module, mode: str, plan=None) -> nn.Module:
    """Wrap the plan's blocks in place per `mode` (`plan`: the model's ParallelPlan, by default
    `model.parallel_plan()`); returns the model. State-dict keys are unchanged (the wrapper's
    `_checkpoint_wrapped_module.` prefix is stripped by its hooks and by DCP's get_state_dict)."""
    plan = plan or model.parallel_plan()
    if mode not in MODES:
        raise UserError(f"config key 'parallel.ac': expected one of {'|'.join(MODES)}, got {mode!r}")
    if mode == "none":
        return model
    selective = mode == "selective"
    if mode == "loop" and plan.looped is not None:
        paths = [plan.looped]
        selective = False
    else:
        paths = [*plan.blocks, *([plan.looped] if plan.looped else [])]
    for path in paths:
        model.set_submodule(path, _wrap(model.get_submodule(path), selective))
    return model
