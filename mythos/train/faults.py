"""Fault injection for tests of failure paths: MYTHOS_FAULTS="where@step[,where@step...]".

`checkpoint_write@N` SIGKILLs the process in the middle of writing checkpoint N (after its shards are written, before
the commit; with async saves this is in the background writer); `nan_loss@N` makes step N's loss non-finite;
`hang@N` makes the last rank hang at the start of step N (blocked, as in stuck I/O) for the watchdog to find;
`slow_startup@S` adds S seconds to start-up before the model is built; `startup_gate@R` makes start-up of attempt R
(SLURM_RESTART_COUNT, 0 when unset) write `startup_gate.rankN` in the working directory and wait (up to 300 s) until
this process has a stop signal: a test then signals after seeing every rank's file, so the signal lands in start-up
on any machine, at any load, with the handlers installed; `slow_rank@R:F` makes rank R's every step take F times
as long (it sleeps (F - 1) x its step's time at the end of the step: a straggler for mythos/train/stragglers.py).
Unset in normal runs, where `hook` does nothing.
"""
from __future__ import annotations

import os
import signal
import threading
import time

from mythos.train.callbacks import Callback


def _parse() -> tuple[set[tuple[str, int]], dict[int, float]]:
    spec = os.environ.get("MYTHOS_FAULTS", "")
    out, slow = set(), {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        where, _, step = item.partition("@")
        if where == "slow_rank":
            rank, _, factor = step.partition(":")
            slow[int(rank)] = float(factor)
            continue
        out.add((where, int(step)))
    return out, slow


_FAULTS, _SLOW = _parse()


def slow_down(step_time_s: float) -> None:
    """slow_rank@R:F on rank R: sleep (F - 1) x `step_time_s` (the step's time so far)."""
    factor = _SLOW.get(int(os.environ.get("RANK", "0")))
    if factor is not None and factor > 1:
        time.sleep((factor - 1) * step_time_s)


def active(where: str, step: int) -> bool:
    return (where, step) in _FAULTS


def _startup_gate() -> None:
    from mythos.train.signals import stop_flag

    flag = stop_flag()
    open(f"startup_gate.rank{os.environ.get('RANK', '0')}", "w").close()
    deadline = time.monotonic() + 300
    while flag.signum is None and time.monotonic() < deadline:
        time.sleep(0.05)


def hook(where: str, step: int) -> None:
    if where == "startup":
        time.sleep(sum(s for w, s in _FAULTS if w == "slow_startup"))
        if active("startup_gate", int(os.environ.get("SLURM_RESTART_COUNT") or 0)):
            _startup_gate()
    if where == "checkpoint_write" and active(where, step):
        os.kill(os.getpid(), signal.SIGKILL)
    if where == "step" and active("hang", step):
        if int(os.environ.get("RANK", "0")) == int(os.environ.get("WORLD_SIZE", "1")) - 1:
            threading.Event().wait()  # forever, GIL released: only the watchdog thread still runs


class FaultInjection(Callback):
    """The faults of MYTHOS_FAULTS on the trainer's seams: start-up (`on_setup`, before the model is built), each
    step's start and end of work (callback hooks), the engine's loss (`Engine.loss_hooks`) and the checkpoint writer
    (`CheckpointManager.fault_hook`), both hooked in `on_engine`. Registered by the trainer only when MYTHOS_FAULTS is
    set (`install`); nothing else in mythos/ knows about faults."""

    def __init__(self) -> None:
        self.step = 0

    def on_engine(self, engine) -> None:
        engine.loss_hooks.append(self._loss)
        if engine.ckpt is not None:
            engine.ckpt.fault_hook = hook

    def on_setup(self) -> None:
        hook("startup", 0)

    def on_step_start(self, step: int) -> None:
        self.step = step
        hook("step", step)

    def on_train_step(self, step: int, step_time_s: float) -> None:
        slow_down(step_time_s)

    def _loss(self, ce):
        return ce * float("nan") if active("nan_loss", self.step) else ce


def install() -> FaultInjection | None:
    """The fault callback when MYTHOS_FAULTS is set, else None (normal runs carry no fault code on their path)."""
    return FaultInjection() if _FAULTS or _SLOW else None
