"""DeepSpeed checkpoints as a strategy of CheckpointManager: the same tmp-dir / manifest / rename / `latest` / prune
protocol as DCP's, with DeepSpeed's files as the payload (training: its engine writes and reads them; inference:
full weights via zero_to_fp32, no engine). DeepSpeed reads its files with torch.load(weights_only=False); so before
it reads any, every `.pt` file of the checkpoint is loaded here with weights_only=True admitting only the three
DeepSpeed types its optimizer files hold (DS_SAFE_TYPES): a file that asks for anything else is refused with one
line, a damaged one falls back to the previous checkpoint.
"""
from __future__ import annotations

import importlib
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from mythos.checkpoint.dcp import Payload
from mythos.checkpoint.deepspeed_universal import finish_universal, universal_source
from mythos.checkpoint.manager import reason
from mythos.checkpoint.safe_pickle import UnsafeCheckpoint
from mythos.errors import UserError
from mythos.parallel.ranks import agree, rank, world


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
    for f in files[rank()::world()]:
        try:
            safe_load(f)
        except UnsafeCheckpoint as e:
            problem = ("unsafe", str(e))
        except Exception as e:  # noqa: BLE001 - truncated / garbled: damage
            problem = ("damaged", f"{f}: {reason(e)[1]}")
        if problem:
            break
    problem = agree(problem)
    if problem:
        raise (UnsafeCheckpoint if problem[0] == "unsafe" else ValueError)(problem[1])


class DeepSpeedPayload(Payload):
    """Training: DeepSpeed's `save_checkpoint` / `load_checkpoint` on every rank (its engine holds the ZeRO
    partitions), our trainer state as its client state; files checked weights_only before DeepSpeed reads any."""

    required_files = ("trainer_state.json",)  # no DCP .metadata: DeepSpeed's own files are checked by check_files

    def __init__(self, engine, universal: bool = False) -> None:
        self.engine = engine
        self.universal = universal  # load through DeepSpeed's universal checkpoint (another world size)

    def write(self, tmp: Path, step: int, model, optimizer, trainer_state: dict[str, Any], fault_hook) -> None:
        self.engine.save_checkpoint(str(tmp.parent), tag=tmp.name, client_state={"mythos": trainer_state},
                                    save_latest=False)
        fault_hook("checkpoint_write", step)  # tests: a kill with the files written, nothing committed

    def read(self, path: Path, model, optimizer) -> None:
        check_files(path)
        load_dir, tag = universal_source(path) if self.universal else (str(path.parent), path.name)
        loaded, _ = self.engine.load_checkpoint(load_dir, tag=tag, load_module_strict=True,
                                                load_optimizer_states=True, load_lr_scheduler_states=False)
        if self.universal:
            finish_universal(path, self.engine.module, safe_load)
        if loaded is None:  # damage (a fallback), not a config error
            raise FileNotFoundError(f"{path}: no DeepSpeed checkpoint files in it")


class DeepSpeedWeightsPayload(Payload):
    """Inference (mythos-eval, mythos-export): a DeepSpeed checkpoint as full weights into a plain model, no
    DeepSpeed engine."""

    required_files = DeepSpeedPayload.required_files

    def read(self, path: Path, model, optimizer) -> None:
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
