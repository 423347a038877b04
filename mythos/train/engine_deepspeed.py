"""DeepSpeed ZeRO 1/2/3 behind the same train step as FSDP (`parallel.backend = "deepspeed"`).

Numerics match the FSDP engine: our AdamW (a torch optimizer, passed to DeepSpeed as the client optimizer, so no
DeepSpeed op is compiled: FusedAdam / CPUAdam are never built) and our lr schedule (stepped by us, on the client
optimizer's param groups); DeepSpeed's gradient clipping uses the same coefficient max_norm / (norm + 1e-6) as torch's.
Our MoE runs under every stage (DeepSpeed's own MoE refuses ZeRO-3). fp32 or bf16 (fp16 is unsupported on CPU).

Checkpoints: DeepSpeed's `save_checkpoint` on every rank into `checkpoints/step_NNNNNNN.tmp/`, with our trainer state
as client state, then the same rename -> atomic `latest` -> prune as the FSDP path (CheckpointManager). DeepSpeed
reads its files with torch.load(weights_only=False); so before it reads any, every `.pt` file of the checkpoint is
loaded here with weights_only=True admitting only the three DeepSpeed types its optimizer files hold (DS_SAFE_TYPES):
a file that asks for anything else is refused with one line, a damaged one falls back to the previous checkpoint.
At another world size a ZeRO-1/2 checkpoint loads through DeepSpeed's universal checkpoint (deepspeed_universal.py).
"""
from __future__ import annotations

import importlib
import json
import logging
import math
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mythos.config import Config
from mythos.errors import UserError
from mythos.parallel import DistEnv, materialize
from mythos.parallel.activation_checkpoint import apply_activation_checkpointing
from mythos.parallel.meta_init import is_meta
from mythos.parallel.parallelize import apply_compile
from mythos.train import faults
from mythos.train.checkpoint import CheckpointManager, _agree, _rank, _reason, _world
from mythos.train.deepspeed_universal import finish_universal, resumes_at_new_world, universal_source, with_universal
from mythos.train.engine import Engine
from mythos.train.optim import build_optimizer, build_scheduler
from mythos.train.safe_pickle import UnsafeCheckpoint

CONFIG_NAME = "deepspeed_config.json"
# DeepSpeed 0.19 calls torch.distributed's deprecated *_into_tensor / *_tensor names on every step.
warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
# Batch shape, optimizer and schedule come from [train]: a user JSON may not set them (one source of truth).
OURS = {"train_batch_size": "train.global_batch", "train_micro_batch_size_per_gpu": "train.micro_batch",
        "gradient_accumulation_steps": "train.global_batch / (world size x train.micro_batch)",
        "optimizer": "train.lr, train.beta1, train.beta2, train.eps, train.weight_decay",
        "scheduler": "train.schedule, train.warmup_steps, train.min_lr_ratio"}


def import_deepspeed(device: torch.device):
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if device.type == "cuda" else "cpu")
    try:
        import deepspeed
    except ImportError:
        raise UserError("config key 'parallel.backend': 'deepspeed' needs the deepspeed package "
                        "(pip install --no-build-isolation 'mythos[deepspeed]')") from None
    from deepspeed.utils import logger
    logger.setLevel(logging.WARNING)
    if device.type == "cpu":
        _skip_shm_op_build(deepspeed)
    return deepspeed


def _skip_shm_op_build(deepspeed) -> None:
    """On CPU, DeepSpeed's communication backend compiles a shared-memory all-reduce op at start-up (csrc/cpu/comm,
    ~40 s, into TORCH_EXTENSIONS_DIR) that only its inference all-reduce uses; training collectives go through
    torch.distributed (gloo). Skip the build. Private hook, tested with deepspeed 0.19.8."""
    ds_torch = importlib.import_module("deepspeed.comm.torch")  # (the attribute deepspeed.comm.torch is torch)
    if not callable(getattr(ds_torch, "build_shm_op", None)):
        raise UserError(f"deepspeed {deepspeed.__version__}: deepspeed.comm.torch.build_shm_op not found (mythos is "
                        f"tested with deepspeed 0.19.8): install that version")
    ds_torch.build_shm_op = lambda: None


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
        "bf16": {"enabled": p.mixed_precision == "bf16", "check_grad_overflow": True},  # skip non-finite steps
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,  # our torch AdamW as the client optimizer
        "zero_force_ds_cpu_optimizer": False,  # ... also with optimizer offload (no DeepSpeedCPUAdam build)
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
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
    return _merge(ds, user)


def _ensure_process_group(env: DistEnv) -> None:
    """DeepSpeed needs a process group even for one process: a gloo group of one on an in-memory store."""
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    os.environ.setdefault("LOCAL_RANK", str(env.local_rank))  # deepspeed.initialize asserts it is set


# The non-tensor types DeepSpeed 0.19.8 pickles into its checkpoint files (found with
# torch.serialization.get_unsafe_globals_in_checkpoint on ZeRO-1/2/3 checkpoints; model-states files need none).
DS_SAFE_TYPES = ("deepspeed.runtime.zero.config.ZeroStageEnum",  # an int enum: the ZeRO stage
                 "deepspeed.runtime.fp16.loss_scaler.LossScaler",  # plain attributes, no __setstate__
                 "deepspeed.utils.tensor_fragment.fragment_address")  # dataclass(numel, start)


def _safe_types() -> list[type]:
    types = []
    for dotted in DS_SAFE_TYPES:
        module, name = dotted.rsplit(".", 1)
        obj = getattr(importlib.import_module(module), name, None)
        if not isinstance(obj, type):
            raise UserError(f"deepspeed: {dotted} not found (mythos is tested with deepspeed 0.19.8): install that "
                            f"version")
        types.append(obj)
    return types


def safe_load(path: Path) -> Any:
    """torch.load(weights_only=True) of one DeepSpeed checkpoint file; UnsafeCheckpoint if it asks for any global
    beyond plain tensors/containers and DS_SAFE_TYPES (loading it could run code)."""
    try:
        with torch.serialization.safe_globals(_safe_types()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"GLOBAL (\S+)", str(e))
        what = f"it asks to load {m.group(1)}" if m else f"weights_only unpickling failed ({_first_line(e)})"
        raise UnsafeCheckpoint(f"{path}: refused: {what}, which is not a tensor or one of DeepSpeed's checkpoint "
                               f"types (loading it could run code from the file)") from None


def _first_line(e: Exception) -> str:
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)


def check_files(path: Path) -> None:
    """Every `.pt` file of checkpoint `path` loads weights_only (split over the ranks, agreed by all before
    DeepSpeed reads anything, so no rank enters DeepSpeed's load alone). Raises the same error on every rank:
    UnsafeCheckpoint (refused) or ValueError (damage: the caller falls back)."""
    files = sorted(path.glob("*.pt"))
    problem = None
    for f in files[_rank()::_world()]:
        try:
            safe_load(f)
        except UnsafeCheckpoint as e:
            problem = ("unsafe", str(e))
        except Exception as e:  # noqa: BLE001 - truncated / garbled: damage
            problem = ("damaged", f"{f}: {_reason(e)[1]}")
        if problem:
            break
    problem = _agree(problem)
    if problem:
        raise (UnsafeCheckpoint if problem[0] == "unsafe" else ValueError)(problem[1])


class DeepSpeedCheckpoints(CheckpointManager):
    """The FSDP path's tmp-dir / rename / `latest` / prune logic, with DeepSpeed's files as the payload."""

    required_files = ("trainer_state.json",)  # no DCP .metadata: DeepSpeed's own files are checked by check_files
    universal = False  # load through DeepSpeed's universal checkpoint (another world size: deepspeed_universal.py)

    def __init__(self, run_dir: Path, keep: int, engine, check) -> None:
        super().__init__(run_dir, keep=keep, fault_hook=faults.hook, check=check)
        self.engine = engine

    def _write_payload(self, tmp: Path, step: int, model, optimizer, trainer_state: dict[str, Any]) -> None:
        self.engine.save_checkpoint(str(tmp.parent), tag=tmp.name, client_state={"mythos": trainer_state},
                                    save_latest=False)
        self.fault_hook("checkpoint_write", step)  # tests: a kill with the files written, nothing committed

    def _read_payload(self, path: Path, model, optimizer) -> None:
        check_files(path)
        load_dir, tag = universal_source(path) if self.universal else (str(path.parent), path.name)
        loaded, _ = self.engine.load_checkpoint(load_dir, tag=tag, load_module_strict=True,
                                                load_optimizer_states=True, load_lr_scheduler_states=False)
        if self.universal:
            finish_universal(path, self.engine.module, safe_load)
        if loaded is None:  # damage (a fallback), not a config error
            raise FileNotFoundError(f"{path}: no DeepSpeed checkpoint files in it")


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
        self.ckpt = DeepSpeedCheckpoints(run_dir, cfg.checkpoint.keep, self.model, check=self.check_resume)
        self.ckpt.universal = self.universal

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


class DeepSpeedWeights(CheckpointManager):
    """Inference (mythos-eval, mythos-export): the newest DeepSpeed checkpoint that verifies and loads, as full
    weights into a plain model, no DeepSpeed engine; damage falls back, a file asking to run code is refused."""
    required_files = DeepSpeedCheckpoints.required_files

    def _read_payload(self, path: Path, model, optimizer) -> None:
        missing, unexpected = model.load_state_dict(load_weights(path), strict=False)
        if missing or unexpected:
            raise UserError(f"{path}: DeepSpeed checkpoint does not match the run's model (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})")


def load_weights(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    """Full fp32 model weights (+ buffers) of a DeepSpeed checkpoint of any ZeRO stage, in one process. Every file
    is checked weights_only first: zero_to_fp32 unpickles with weights_only=False."""
    import_deepspeed(torch.device("cpu"))
    check_files(checkpoint_dir)
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    sd = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir.parent), tag=checkpoint_dir.name)
    # Buffers (the MoE routing bias) live in the model-states file, under the module's state-dict keys.
    states = sorted(checkpoint_dir.glob("*mp_rank_00_model_states.pt"))
    if not states:
        raise FileNotFoundError(f"{checkpoint_dir}: no DeepSpeed model-states file (*mp_rank_00_model_states.pt)")
    module_sd = safe_load(states[0])["module"]
    sd = {_plain_name(k): v for k, v in sd.items()}
    for k, v in module_sd.items():
        sd.setdefault(k, v)  # buffers; parameters came full-size from the optimizer partitions above
    return sd


def _plain_name(name: str) -> str:
    return name.replace("_checkpoint_wrapped_module.", "").replace("_orig_mod.", "")
