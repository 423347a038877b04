"""DeepSpeed ZeRO 1/2/3 behind the same train step as FSDP (`parallel.backend = "deepspeed"`).

Numerics match the FSDP engine: our AdamW (a torch optimizer, passed to DeepSpeed as the client optimizer, so no
DeepSpeed op is compiled: FusedAdam / CPUAdam are never built) and our lr schedule (stepped by us, on the client
optimizer's param groups); DeepSpeed's gradient clipping uses the same coefficient max_norm / (norm + 1e-6) as torch's.
Our MoE runs under every stage (DeepSpeed's own MoE refuses ZeRO-3). fp32 or bf16 (fp16 is unsupported on CPU).

Checkpoints: CheckpointManager with DeepSpeed's payload strategy (mythos/checkpoint/deepspeed.py): DeepSpeed's
`save_checkpoint` on every rank into `checkpoints/step_NNNNNNN.tmp/`, with our trainer state as client state, then
the same rename -> atomic `latest` -> prune as the FSDP path; every file is checked weights_only before DeepSpeed
reads it.
At another world size a ZeRO-1/2 checkpoint loads through DeepSpeed's universal checkpoint
(mythos/checkpoint/deepspeed_universal.py).
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mythos.checkpoint import CheckpointManager
from mythos.checkpoint.deepspeed import DeepSpeedPayload, import_deepspeed
from mythos.checkpoint.deepspeed_universal import resumes_at_new_world, with_universal
from mythos.config import Config
from mythos.errors import UserError
from mythos.parallel import DistEnv, materialize
from mythos.parallel.activation_checkpoint import apply_activation_checkpointing
from mythos.parallel.meta_init import is_meta
from mythos.parallel.parallelize import apply_compile
from mythos.train.engine import Engine
from mythos.train.optim import build_optimizer, build_scheduler

CONFIG_NAME = "deepspeed_config.json"
# DeepSpeed 0.19 calls torch.distributed's deprecated *_into_tensor / *_tensor names on every step.
warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
# Batch shape, optimizer and schedule come from [train]: a user JSON may not set them (one source of truth).
OURS = {"train_batch_size": "train.global_batch", "train_micro_batch_size_per_gpu": "train.micro_batch",
        "gradient_accumulation_steps": "train.global_batch / (world size x train.micro_batch)",
        "optimizer": "train.lr, train.beta1, train.beta2, train.eps, train.weight_decay",
        "scheduler": "train.schedule, train.warmup_steps, train.min_lr_ratio"}


def generated_config(cfg: Config, world_size: int, n_micro: int) -> dict[str, Any]:
    """The DeepSpeed JSON that reproduces our settings."""
    p, t = cfg.parallel, cfg.train
    zero: dict[str, Any] = {"stage": p.zero_stage}
    if p.offload_optimizer != "none":
        zero["offload_optimizer"] = {"device": p.offload_optimizer}
    if p.offload_params != "none":
        zero["offload_param"] = {"device": p.offload_params}
    return {
        "train_batch_size": t.global_batch,
        "train_micro_batch_size_per_gpu": t.global_batch // world_size // n_micro,  # the split's (batch.py)
        "gradient_accumulation_steps": n_micro,
        "gradient_clipping": max(0.0, t.grad_clip),  # DeepSpeed's default is 1.0: always set it from ours
        "zero_optimization": zero,
        "bf16": {"enabled": t.dtype == "bf16", "check_grad_overflow": True},  # skip non-finite steps
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,  # our torch AdamW as the client optimizer
        "zero_force_ds_cpu_optimizer": False,  # ... also with optimizer offload (no DeepSpeedCPUAdam build)
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def deep_merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, key by key into nested dicts (the one dict deep-merge: tyro merges the config's)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_config(cfg: Config, world_size: int, n_micro: int) -> dict[str, Any]:
    """Ours, with `parallel.deepspeed_config` (a JSON file) merged over it key by key."""
    ds = generated_config(cfg, world_size, n_micro)
    if not cfg.parallel.deepspeed_config:
        return ds
    path = Path(cfg.parallel.deepspeed_config)
    try:
        user = json.loads(path.read_text())
    except OSError as e:
        raise UserError(f"{path}: cannot read the DeepSpeed config (parallel.deepspeed_config): {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(user, dict):
        raise UserError(f"{path}: expected a JSON object of DeepSpeed settings")
    for key, ours in OURS.items():
        if key in user:
            raise UserError(f"{path}: key '{key}' is set from the mythos config ({ours}); remove it")
    return deep_merge(ds, user)


def _ensure_process_group(env: DistEnv) -> None:
    """DeepSpeed needs a process group even for one process: a gloo group of one on an in-memory store."""
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    os.environ.setdefault("LOCAL_RANK", str(env.local_rank))  # deepspeed.initialize asserts it is set


class DeepSpeedEngine(Engine):
    backend = "deepspeed"
    universal = False  # this run resumes through DeepSpeed's universal checkpoint (set in __init__)

    def __init__(self, model: torch.nn.Module, cfg: Config, env: DistEnv, run_dir: Path) -> None:
        super().__init__(cfg, env)
        deepspeed = import_deepspeed(env.device)
        _ensure_process_group(env)
        if is_meta(model):  # built on meta by the trainer: ZeRO partitions after initialize, so materialise whole
            materialize(model, env.device)
        model.to(env.device)
        apply_activation_checkpointing(model, cfg.parallel.ac)
        if cfg.parallel.compile:
            apply_compile(model)
        optimizer = build_optimizer(model, cfg.train)
        self._install_bias_hook(optimizer)  # on the client optimizer, which DeepSpeed steps
        self.scheduler = build_scheduler(optimizer, cfg.train)  # on the client optimizer's param groups
        self.universal = resumes_at_new_world(run_dir, self.backend, cfg.parallel.zero_stage, env.world_size)
        ds_config = with_universal(resolve_config(cfg, env.world_size, self.n_micro), self.universal)
        if env.rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / CONFIG_NAME).write_text(json.dumps(ds_config, indent=1) + "\n")
        try:
            self.model, self.optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                                    config=ds_config)
        except (AssertionError, ValueError) as e:  # DeepSpeed checks its config with asserts
            raise UserError(f"{run_dir / CONFIG_NAME}: deepspeed.initialize refused it: {e}") from None
        self.ckpt = CheckpointManager(run_dir, keep=cfg.checkpoint.keep, check=self.check_resume,
                                      payload=DeepSpeedPayload(self.model, self.universal))

    @property
    def module(self) -> torch.nn.Module:
        return self.model.module

    def engine_state(self) -> dict[str, Any]:
        return {"backend": self.backend, "zero_stage": self.cfg.parallel.zero_stage,
                "world_size": self.env.world_size}

    def check_resume(self, path: Path, saved: dict[str, Any]) -> None:
        saved = saved.get("engine", {"backend": "fsdp"})
        now = self.engine_state()
        keys = [k for k in now if saved.get(k) != now.get(k) and not (k == "world_size" and self.universal)]
        if keys:
            keys = ["backend"] if "backend" in keys else keys
            diff = ", ".join(f"{k} {saved.get(k)} -> {now.get(k)}" for k in keys)
            need = (f"parallel.backend = \"deepspeed\", parallel.zero_stage = {saved.get('zero_stage')} on "
                    f"{saved.get('world_size')} ranks" if saved.get("backend") == "deepspeed"
                    else f"parallel.backend = \"{saved.get('backend')}\"")
            raise UserError(f"{path}: cannot resume with {diff}: a DeepSpeed checkpoint resumes with the backend and "
                            f"ZeRO stage that wrote it, at another world size only under ZeRO 1/2 (through "
                            f"DeepSpeed's universal checkpoint); resume with {need}")

    def _backward(self, loss: torch.Tensor) -> None:
        self.model.backward(loss, scale_wrt_gas=False)  # already divided by the micro-batch count
        if not self.model.is_gradient_accumulation_boundary():
            self.model.step()  # advances DeepSpeed's micro-step counter only

    def _clip_and_step(self, loss_finite: bool) -> tuple[float, bool]:
        self.model.step()  # clip, step (skipped by DeepSpeed itself on a non-finite norm), zero grads
        norm = self.model.get_global_grad_norm()
        grad_norm = float(norm) if norm is not None else float("nan")
        return grad_norm, loss_finite and math.isfinite(grad_norm)
