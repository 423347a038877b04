"""The one train step: an engine owns the wrapped model, optimizer and lr schedule, runs one optimizer step over the
micro-batches of a global batch, and saves / restores its state in the run's checkpoints.

    engine = build_engine(model, cfg, env, run_dir)     # FSDP2 (parallel.backend = "fsdp") or DeepSpeed ZeRO
    result = engine.train_step(inputs_BT, targets_BT, loops, step)
    engine.save(step, trainer_state); state = engine.load()

The trainer loop, the distributed tests and the benchmarks all call `train_step`; the engines differ only in how
gradients are made, clipped and applied (`_backward`, `_clip_and_step`) and in the checkpoint payload.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from mythos.config import Config
from mythos.errors import UserError
from mythos.parallel import DistEnv, all_reduce_mean, all_reduce_sum, build_mesh, clip_grad_norm
from mythos.parallel import expert_grad_sync, parallelize
from mythos.train import faults
from mythos.train.batch import batch_split
from mythos.train.checkpoint import CheckpointManager, set_rng_state
from mythos.train.optim import build_optimizer, build_scheduler


@dataclass
class StepResult:
    loss: float  # cross-entropy, mean over micro-batches and ranks
    ponder: float
    grad_norm: float  # global norm before clipping
    lr: float  # the learning rate this step used
    skipped: bool  # non-finite loss or gradient norm: no update was applied
    out: Any  # the last micro-batch's ModelOutput (per-loop metrics)


def micro_batches(cfg: Config, world_size: int) -> int:
    """Gradient-accumulation steps per optimizer step (mythos/train/batch.py: the one split rule)."""
    return batch_split(cfg, world_size).n_micro


class Engine:
    """Shared step: forward/backward per micro-batch with the step's loop count, then clip + step, the lr schedule
    and the MoE bias update. Subclasses set model / optimizer / scheduler / ckpt."""

    backend = "base"
    model: torch.nn.Module  # what to call for forward (training and validation)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ckpt: CheckpointManager
    inspect_grads: Callable[[torch.nn.Module], None] | None = None  # tests: called after the backward, before clip

    def __init__(self, cfg: Config, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        self.split = batch_split(cfg, env.world_size)
        self.n_micro, self.micro_batch = self.split.n_micro, self.split.micro_batch

    # ---- the step
    def train_step(self, inputs_BT: torch.Tensor, targets_BT: torch.Tensor, loops: int | None,
                   step: int) -> StepResult:
        t, device = self.cfg.train, self.env.device
        n_micro = self.n_micro
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if t.dtype == "bf16"
                    else contextlib.nullcontext())
        ce_sum = torch.zeros((), device=device)
        ponder_sum = torch.zeros((), device=device)
        out = None
        for m in range(n_micro):
            sl = slice(m * self.micro_batch, (m + 1) * self.micro_batch)
            x_BT, y_BT = inputs_BT[sl].to(device), targets_BT[sl].to(device)
            self._before_micro_batch(last=m == n_micro - 1)
            with autocast:
                out = self.model(x_BT, n_loops=loops)
                ce = F.cross_entropy(out.logits_BTV.float().flatten(0, 1), y_BT.flatten())
                if faults.active("nan_loss", step + 1):
                    ce = ce * float("nan")
                loss = (ce + out.aux_loss) / n_micro
            self._backward(loss)
            ce_sum += ce.detach()
            ponder_sum += out.ponder.detach()
        if self.inspect_grads is not None:
            self.inspect_grads(self.model)
        ce_mean, ponder = all_reduce_mean(torch.stack([ce_sum, ponder_sum]) / n_micro)
        lr = self.scheduler.get_last_lr()[0]
        grad_norm, applied = self._clip_and_step(math.isfinite(ce_mean))
        self.scheduler.step()
        if applied:
            for moe in self.moe_modules():
                moe.update_bias(all_reduce_sum(moe.tokens_per_expert.clone()))
        return StepResult(ce_mean, ponder, grad_norm, lr, not applied, out)

    def _before_micro_batch(self, last: bool) -> None:
        """Gradient-accumulation hint before each micro-batch's forward (`last`: the one that ends the step)."""

    def _backward(self, loss: torch.Tensor) -> None:
        raise NotImplementedError

    def _clip_and_step(self, loss_finite: bool) -> tuple[float, bool]:
        """(pre-clip global grad norm, whether the update was applied); gradients are cleared either way."""
        raise NotImplementedError

    def moe_modules(self) -> list:
        return self.module.moe_modules()

    @property
    def module(self) -> torch.nn.Module:
        """The plain Mythos module (for its methods; forward through `model`)."""
        return self.model

    # ---- checkpoints
    def engine_state(self) -> dict[str, Any]:
        """Written into trainer_state.json; a resume must match it (see `check_resume`)."""
        return {"backend": self.backend}

    def save(self, step: int, trainer_state: dict[str, Any]) -> Path:
        state = {**trainer_state, "step": step, "scheduler": self.scheduler.state_dict(),
                 "engine": self.engine_state()}
        return self.ckpt.save(step, self.model, self.optimizer, state)

    def load(self) -> dict[str, Any] | None:
        """Restore model, optimizer, schedule and this rank's RNG from the newest checkpoint that verifies and loads
        (older ones are the fallback, see CheckpointManager.load); returns the trainer state, or None when the run
        has no checkpoint."""
        state = self.ckpt.resume(self.model, self.optimizer)
        if state is None:
            return None
        self.scheduler.load_state_dict(state["scheduler"])
        if "rng" in state:
            set_rng_state(state["rng"])
        return state

    def check_resume(self, path: Path, saved: dict[str, Any]) -> None:
        """UserError (one line) if this engine cannot resume the checkpoint at `path` (`saved`: its trainer state).
        CheckpointManager calls it for each candidate before reading the payload."""


class FSDPEngine(Engine):
    """FSDP2 + expert parallelism (`parallelize`), our AdamW and schedule, DCP checkpoints."""

    backend = "fsdp"

    def __init__(self, model: torch.nn.Module, cfg: Config, env: DistEnv, run_dir: Path) -> None:
        super().__init__(cfg, env)
        self.model = parallelize(model, build_mesh(env, cfg.parallel), cfg.parallel, device=env.device,
                                 dtype=cfg.train.dtype)
        self.optimizer = build_optimizer(self.model, cfg.train)
        self.scheduler = build_scheduler(self.optimizer, cfg.train)
        self.ckpt = CheckpointManager(run_dir, keep=cfg.checkpoint.keep, fault_hook=faults.hook,
                                      async_save=cfg.checkpoint.async_save, check=self.check_resume)

    def check_resume(self, path: Path, saved: dict[str, Any]) -> None:
        """DCP checkpoints load at any world size and sharding: only the backend must match."""
        saved = saved.get("engine", {})
        if saved.get("backend", "fsdp") != "fsdp":
            raise UserError(f"{path}: written by the {saved['backend']} engine; resume it with parallel.backend = "
                            f"\"{saved['backend']}\" (or export the weights with mythos-export)")

    def _before_micro_batch(self, last: bool) -> None:
        expert_grad_sync(self.model, last)  # experts: one reduce-scatter per step, not per micro-batch

    def _backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def _clip_and_step(self, loss_finite: bool) -> tuple[float, bool]:
        grad_norm = clip_grad_norm(self.model, self.cfg.train.grad_clip)
        if not (loss_finite and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return grad_norm, False
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, True


def build_engine(model: torch.nn.Module, cfg: Config, env: DistEnv, run_dir: str | Path) -> Engine:
    """The engine `parallel.backend` names, wrapping a freshly built (seeded) model."""
    if cfg.parallel.backend == "deepspeed":
        from mythos.train.engine_deepspeed import DeepSpeedEngine
        return DeepSpeedEngine(model, cfg, env, Path(run_dir))
    return FSDPEngine(model, cfg, env, Path(run_dir))
