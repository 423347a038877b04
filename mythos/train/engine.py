"""The one train step: an engine owns the wrapped model, optimizer and lr schedule, runs one optimizer step over the
micro-batches of a global batch, and saves / restores its state in the run's checkpoints.

    engine = build_engine(model, cfg, env, run_dir)     # FSDP2 (parallel.backend = "fsdp") or DeepSpeed ZeRO
    for micro in engine.micro_batches(inputs_BT, targets_BT, loops):
        engine.forward_backward(micro)                  # the micro-batch loss and its backward
    result = engine.optim_step()                        # clip, step (+ MoE bias hook), schedule
    engine.save(step, {"data": loader, ...}); engine.load(parts)   # the run's Stateful parts

`forward_backward` is the only definition of the micro-batch loss and the only caller of `expert_grad_sync`;
`optim_step` the only optimizer step. The trainer, `mythos-plan` (on the fake process group), the research arms, the
distributed tests and the benchmarks all drive these two (`train_step` is the pair over one global batch). The
engines differ only in how gradients are made, clipped and applied (`_backward`, `_clip_and_step`) and in the
checkpoint payload. The MoE routing-bias update is a post-step hook on the optimizer (torchtitan's way): it runs
exactly when an update is applied.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol

import torch
import torch.nn.functional as F

from mythos.config import Config
from mythos.errors import UserError
from mythos.parallel import DistEnv, all_reduce_mean, all_reduce_sum, build_mesh, clip_grad_norm
from mythos.parallel import expert_grad_sync, parallelize
from mythos.train.batch import batch_split
from mythos.checkpoint import CheckpointManager, set_rng_state
from mythos.train.optim import build_optimizer, build_scheduler


@dataclass
class StepResult:
    loss: float  # cross-entropy, mean over micro-batches and ranks
    ponder: float
    grad_norm: float  # global norm before clipping
    lr: float  # the learning rate this step used
    skipped: bool  # non-finite loss or gradient norm: no update was applied
    out: Any  # the last micro-batch's ModelOutput (per-loop metrics)


@dataclass
class MicroBatch:
    inputs_BT: torch.Tensor
    targets_BT: torch.Tensor  # -100: not scored (cross_entropy's ignore_index)
    loops: int | None  # the step's loop count (None: the model's default)
    last: bool = True  # the micro-batch that ends the step (experts reduce their gradients after it)


class Stateful(Protocol):
    """A checkpointed part of a run (the data loader, the counters), as torchtitan's checkpointer takes them."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def parts_state(parts: Mapping[str, Stateful]) -> dict[str, Any]:
    """trainer_state.json's fields from the parts: each part's state under its name, or, for a part with
    `flat = True` (RunCounters), its fields at the top level, where checkpoints have always kept them."""
    state: dict[str, Any] = {}
    for name, part in parts.items():
        state |= part.state_dict() if getattr(part, "flat", False) else {name: part.state_dict()}
    return state


def micro_batches(cfg: Config, world_size: int) -> int:
    """Gradient-accumulation steps per optimizer step (mythos/train/batch.py: the one split rule)."""
    return batch_split(cfg, world_size).n_micro


class Engine:
    """Shared step: forward/backward per micro-batch with the step's loop count, then clip + step, the lr schedule
    and the MoE bias update (an optimizer post-step hook). Subclasses set model / optimizer / scheduler / ckpt.
    `fake`: tensors without values (mythos-plan's FakeTensorMode): optim_step only creates the optimizer state."""

    backend = "base"
    model: torch.nn.Module  # what to call for forward (training and validation)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ckpt: CheckpointManager | None
    inspect_grads: Callable[[torch.nn.Module], None] | None = None  # tests: called after the backward, before clip

    def __init__(self, cfg: Config, env: DistEnv, fake: bool = False) -> None:
        self.cfg, self.env, self.fake = cfg, env, fake
        self.split = batch_split(cfg, env.world_size)
        self.n_micro, self.micro_batch = self.split.n_micro, self.split.micro_batch
        self.loss_hooks: list[Callable[[torch.Tensor], torch.Tensor]] = []  # tests: ce -> ce (fault injection)
        self._bias_due = False
        self._reset_sums()

    def _reset_sums(self) -> None:
        self._ce_sum = torch.zeros((), device=self.env.device)
        self._ponder_sum = torch.zeros((), device=self.env.device)
        self._out = None

    def _install_bias_hook(self, optimizer: torch.optim.Optimizer) -> None:
        """The MoE bias update after an applied step. DeepSpeed may step its client optimizer more than once per
        step (ZeRO-3 sub-groups): `_bias_due` makes it once."""
        if not self.fake:
            optimizer.register_step_post_hook(lambda *_: self._update_moe_bias())

    def _update_moe_bias(self) -> None:
        if self._bias_due:
            self._bias_due = False
            for moe in self.moe_modules():
                moe.update_bias(all_reduce_sum(moe.tokens_per_expert.clone()))

    # ---- the step
    def micro_batches(self, inputs_BT: torch.Tensor, targets_BT: torch.Tensor,
                      loops: int | None) -> Iterator[MicroBatch]:
        """This rank's share of a global batch as the split's micro-batches."""
        for m in range(self.n_micro):
            sl = slice(m * self.micro_batch, (m + 1) * self.micro_batch)
            yield MicroBatch(inputs_BT[sl], targets_BT[sl], loops, last=m == self.n_micro - 1)

    def forward_backward(self, micro: MicroBatch) -> Any:
        """The micro-batch loss, (cross-entropy + aux) / n_micro, and its backward; returns the ModelOutput."""
        t, device = self.cfg.train, self.env.device
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if t.dtype == "bf16"
                    else contextlib.nullcontext())
        x_BT, y_BT = micro.inputs_BT.to(device), micro.targets_BT.to(device)
        self._before_micro_batch(last=micro.last)
        with autocast:
            out = self.model(x_BT, n_loops=micro.loops)
            ce = F.cross_entropy(out.logits_BTV.float().flatten(0, 1), y_BT.flatten())
            for hook in self.loss_hooks:
                ce = hook(ce)
            loss = (ce + out.aux_loss) / self.n_micro
        self._backward(loss)
        if not self.fake:
            self._ce_sum += ce.detach()
            self._ponder_sum += out.ponder.detach()
            self._out = out
        return out

    def optim_step(self) -> StepResult | None:
        """Clip and apply the accumulated gradients (skipped on a non-finite loss or norm), then the schedule."""
        if self.inspect_grads is not None:
            self.inspect_grads(self.model)
        if self.fake:  # no values: no norm, no finiteness, no schedule; the optimizer state is what is measured
            self.optimizer.step()
            self._reset_sums()
            return None
        ce_mean, ponder = all_reduce_mean(torch.stack([self._ce_sum, self._ponder_sum]) / self.n_micro)
        lr = self.scheduler.get_last_lr()[0]
        self._bias_due = True
        grad_norm, applied = self._clip_and_step(math.isfinite(ce_mean))
        self._bias_due = False
        self.scheduler.step()
        out = self._out
        self._reset_sums()
        return StepResult(ce_mean, ponder, grad_norm, lr, not applied, out)

    def train_step(self, inputs_BT: torch.Tensor, targets_BT: torch.Tensor, loops: int | None) -> StepResult:
        """One optimizer step over this rank's share of a global batch."""
        for micro in self.micro_batches(inputs_BT, targets_BT, loops):
            self.forward_backward(micro)
        return self.optim_step()

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

    def save(self, step: int, parts: Mapping[str, Stateful]) -> Path:
        """Checkpoint `step`: model, optimizer, schedule, each rank's RNG, and the parts' states in
        trainer_state.json (see `parts_state`)."""
        state = {**parts_state(parts), "step": step, "scheduler": self.scheduler.state_dict(),
                 "engine": self.engine_state()}
        return self.ckpt.save(step, self.model, self.optimizer, state)

    def load(self, parts: Mapping[str, Stateful]) -> bool:
        """Restore model, optimizer, schedule, this rank's RNG and the parts (in order, through load_state_dict)
        from the newest checkpoint that verifies and loads (older ones are the fallback, see
        CheckpointManager.load); False when the run has no checkpoint. A part's ValueError (the checkpoint is of
        another run) is a UserError naming the checkpoint."""
        state = self.ckpt.resume(self.model, self.optimizer)
        if state is None:
            return False
        self.scheduler.load_state_dict(state["scheduler"])
        if "rng" in state:
            set_rng_state(state["rng"])
        for name, part in parts.items():
            try:
                part.load_state_dict(state if getattr(part, "flat", False) else state[name])
            except ValueError as e:
                raise UserError(f"{self.ckpt.loaded_from}: {e}") from None
        return True

    def check_resume(self, path: Path, saved: dict[str, Any]) -> None:
        """UserError (one line) if this engine cannot resume the checkpoint at `path` (`saved`: its trainer state).
        CheckpointManager calls it for each candidate before reading the payload."""


class FSDPEngine(Engine):
    """FSDP2 + expert parallelism (`parallelize`), our AdamW and schedule, DCP checkpoints."""

    backend = "fsdp"

    def __init__(self, model: torch.nn.Module, cfg: Config, env: DistEnv, run_dir: Path | None,
                 mesh: Any = "build", fake: bool = False) -> None:
        """`run_dir` None: no checkpoints (mythos-plan, research arms); `mesh`: one already built (mythos-plan
        counts collectives per mesh dim); `fake`: see Engine."""
        super().__init__(cfg, env, fake)
        self.mesh = build_mesh(env, cfg.parallel) if isinstance(mesh, str) else mesh
        self.model = parallelize(model, self.mesh, cfg.parallel, device=env.device,
                                 dtype=cfg.train.dtype)
        self.optimizer = build_optimizer(self.model, cfg.train)
        self._install_bias_hook(self.optimizer)
        self.scheduler = build_scheduler(self.optimizer, cfg.train)
        self.ckpt = None if run_dir is None else CheckpointManager(
            run_dir, keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save, check=self.check_resume)

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
