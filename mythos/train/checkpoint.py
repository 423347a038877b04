"""Checkpoints in `run.dir/checkpoints/step_NNNNNNN/` with torch.distributed.checkpoint (DCP).

A checkpoint is written to `step_NNNNNNN.tmp/` by every rank, then rank 0 renames it and replaces the `latest` pointer
atomically (write + os.replace), so a kill at any moment leaves `latest` on a complete checkpoint. Model and optimizer
go through DCP's get/set_state_dict, so the same code saves plain, FSDP2-sharded and expert-parallel models and loads
them at another world size. The small trainer state (step, data position, scheduler) is JSON; RNG states are one
tensor file per rank.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from mythos.errors import UserError

STEP_DIR = re.compile(r"^step_(\d{7})$")
# Single-process runs use DCP without a process group on purpose.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class CheckpointManager:
    def __init__(self, run_dir: str | Path, keep: int,
                 fault_hook: Callable[[str, int], None] | None = None):
        self.root = Path(run_dir) / "checkpoints"
        self.keep = keep
        self.fault_hook = fault_hook or (lambda where, step: None)

    # ----------------------------------------------------------------------------------------------------- reading
    def latest_dir(self) -> Path | None:
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        name = pointer.read_text().strip()
        path = self.root / name
        if not STEP_DIR.match(name) or not (path / "trainer_state.json").is_file():
            raise UserError(f"{pointer}: points to {name!r}, which is not a complete checkpoint")
        return path

    def complete_steps(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir())

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
             path: Path | None = None) -> dict[str, Any]:
        """Load model (+ optimizer) in place from `path` (default: latest); returns the trainer state dict."""
        path = path or self.latest_dir()
        if path is None:
            raise UserError(f"{self.root}: no checkpoint found")
        self._read_payload(path, model, optimizer)
        trainer_state = json.loads((path / "trainer_state.json").read_text())
        rng_file = path / f"rng_rank{_rank():05d}.pt"
        if rng_file.is_file():
            trainer_state["rng"] = torch.load(rng_file, weights_only=True)
        return trainer_state

    # ----------------------------------------------------------------------------------------------------- writing
    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             trainer_state: dict[str, Any]) -> Path:
        name = f"step_{step:07d}"
        final, tmp = self.root / name, self.root / f"{name}.tmp"
        if _rank() == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
        _barrier()
        self._write_payload(tmp, model, optimizer, trainer_state)
        torch.save(rng_state(), tmp / f"rng_rank{_rank():05d}.pt")
        self.fault_hook("checkpoint_write", step)
        _barrier()
        if _rank() == 0:
            (tmp / "trainer_state.json").write_text(json.dumps({**trainer_state, "step": step}, indent=1))
            if final.exists():  # re-saving the same step (e.g. final == last interval checkpoint)
                shutil.rmtree(final)
            os.replace(tmp, final)
            pointer_tmp = self.root / "latest.tmp"
            pointer_tmp.write_text(name + "\n")
            os.replace(pointer_tmp, self.root / "latest")
            self._prune(keep_name=name)
        _barrier()
        return final

    # Model + optimizer payload: DCP here; another engine (DeepSpeed) overrides these two and keeps the rest.
    def _write_payload(self, tmp: Path, model, optimizer, trainer_state: dict[str, Any]) -> None:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))

    def _read_payload(self, path: Path, model, optimizer) -> None:
        opts = StateDictOptions(strict=True)
        if optimizer is None:  # inference: the model part of the checkpoint only
            state = {"model": get_model_state_dict(model, options=opts)}
            dcp.load(state, checkpoint_id=str(path))
            set_model_state_dict(model, state["model"], options=opts)
        else:
            model_sd, optim_sd = get_state_dict(model, optimizer, options=opts)
            state = {"model": model_sd, "optim": optim_sd}
            dcp.load(state, checkpoint_id=str(path))
            set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                           options=opts)

    def _prune(self, keep_name: str) -> None:
        for p in self.root.iterdir():
            if p.name.endswith(".tmp") and p.name != "latest.tmp" and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)  # leftovers of a save killed midway
        steps = self.complete_steps()
        for s in steps[: max(0, len(steps) - self.keep)]:
            if f"step_{s:07d}" != keep_name:
                shutil.rmtree(self.root / f"step_{s:07d}", ignore_errors=True)
