"""The trainer's callback protocol: the loop calls named hooks; each callback owns its own timing (when to validate,
save, stop) and state. The hooks, in the order the loop calls them (`step`: 1-based, about to run / just run):

    on_start(step)                      before the first step (`step`: the step resumed from, 0 on a fresh run)
    on_step_start(step)                 before the step's timer starts
    on_train_step(step, step_time_s)    right after the engine's step, inside the step's time
    on_step_end(step, step_time_s, result=, loops=, fields=) -> dict | None
                                        fields for the step's metrics record, merged in list order (`fields`: those
                                        merged so far); not called for a skipped (non-finite) step
    requests(step) -> set               this rank's wishes at the step boundary, "save" / "stop"; the list agrees on
                                        them over every rank in one all-reduce (`CallbackList.agree`)
    on_save(step)                       the ranks agreed to checkpoint this step
    on_stop(step)                       the ranks agreed to stop for a requeue (exit 75)
    on_end(step)                        the last step is done

The list's order is the call order of every hook. The small callbacks live here; the metrics line (step_metrics.py),
the watchdog, the profiler, the straggler report and fault injection are their own files.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from mythos.config import Config
from mythos.parallel import DistEnv
from mythos.parallel.ranks import any_rank
from mythos.train.metrics import MetricsLogger
from mythos.train.signals import EXIT_REQUEUE, StopFlag
from mythos.train.validate import validation_losses


class Callback:
    """Every hook, doing nothing: a callback overrides the ones it needs."""

    def on_start(self, step: int) -> None:
        pass

    def on_step_start(self, step: int) -> None:
        pass

    def on_train_step(self, step: int, step_time_s: float) -> None:
        pass

    def on_step_end(self, step: int, step_time_s: float, **info: Any) -> dict | None:
        return None

    def requests(self, step: int) -> set[str]:
        return set()

    def on_save(self, step: int) -> None:
        pass

    def on_stop(self, step: int) -> None:
        pass

    def on_end(self, step: int) -> None:
        pass


class CallbackList:
    """Calls each hook on every callback, in order (None entries, e.g. an absent fault callback, are dropped)."""

    def __init__(self, callbacks: Iterable[Callback | None], device) -> None:
        self.callbacks = [cb for cb in callbacks if cb is not None]
        self.device = device

    def _each(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def on_start(self, step: int) -> None:
        self._each("on_start", step)

    def on_step_start(self, step: int) -> None:
        self._each("on_step_start", step)

    def on_train_step(self, step: int, step_time_s: float) -> None:
        self._each("on_train_step", step, step_time_s)

    def on_step_end(self, step: int, step_time_s: float, **info: Any) -> None:
        fields: dict = {}
        for cb in self.callbacks:
            fields |= cb.on_step_end(step, step_time_s, fields=fields, **info) or {}

    def agree(self, step: int) -> tuple[bool, bool]:
        """(stop, save), each wished by some callback on some rank: one all-reduce, so all ranks act together."""
        wished = set().union(*(cb.requests(step) for cb in self.callbacks))
        stop, save = any_rank(self.device, "stop" in wished, "save" in wished)
        return stop, save

    def on_save(self, step: int) -> None:
        self._each("on_save", step)

    def on_stop(self, step: int) -> None:
        self._each("on_stop", step)

    def on_end(self, step: int) -> None:
        self._each("on_end", step)


class Checkpointing(Callback):
    """Checkpoints every `checkpoint.interval` steps and every `checkpoint.interval_minutes`, when the ranks stop,
    and at the end (`checkpoint.final`); commits a finished background write at each step boundary."""

    def __init__(self, cfg: Config, engine, parts: dict, metrics: MetricsLogger) -> None:
        self.c, self.engine, self.ckpt, self.parts, self.metrics = cfg.checkpoint, engine, engine.ckpt, parts, metrics
        self.last_s = time.perf_counter()

    def on_start(self, step: int) -> None:
        self.last_s = time.perf_counter()

    def on_step_start(self, step: int) -> None:
        self.ckpt.poll()

    def requests(self, step: int) -> set[str]:
        timed = self.c.interval_minutes > 0 and time.perf_counter() - self.last_s >= 60 * self.c.interval_minutes
        return {"save"} if timed or (self.c.interval and step % self.c.interval == 0) else set()

    def on_save(self, step: int) -> None:
        path = self.engine.save(step, self.parts)
        self.metrics.console(f"checkpoint step {step} -> {path}")
        self.last_s = time.perf_counter()

    def on_stop(self, step: int) -> None:
        self.ckpt.wait()

    def on_end(self, step: int) -> None:
        if self.c.final and not self.ckpt.committed(step):
            self.on_save(step)
        self.ckpt.wait()


class Validation(Callback):
    """Validation loss every `train.eval_interval` steps (not at the last, which the end covers) and at the end of a
    run that trained or reached its last step, at the training loop count and at twice it (the 'think longer'
    check)."""

    def __init__(self, cfg: Config, env: DistEnv, model, metrics: MetricsLogger) -> None:
        self.cfg, self.env, self.model, self.metrics = cfg, env, model, metrics
        self.start_step = 0

    def on_start(self, step: int) -> None:
        self.start_step = step

    def on_step_end(self, step: int, step_time_s: float, **_: Any) -> None:
        every, last = self.cfg.train.eval_interval, self.cfg.train.steps
        if every and step % every == 0 and step < last:
            self.validate(step)

    def on_end(self, step: int) -> None:
        if step > self.start_step or step == self.cfg.train.steps:
            self.validate(step)

    def validate(self, step: int) -> None:
        n = self.cfg.model.loops.train_count
        results = {f"val/loss_loops_{k}" if k else "val/loss": loss
                   for k, loss in validation_losses(self.model, self.cfg, self.env, [n, 2 * n])}
        self.metrics.log_scalars(step, results)
        self.metrics.console("validation | " + " | ".join(f"{k} {v:.4f}" for k, v in results.items()))
        self.model.train()


class StopRequests(Callback):
    """A stop request (a signal, or `train.time_limit_minutes` reached) on any rank stops every rank at the same
    step boundary, after they saved that step together: the run exits EXIT_REQUEUE (75) to be requeued."""

    def __init__(self, flag: StopFlag, time_limit_minutes: float, say: Callable[[str], None]) -> None:
        self.flag, self.limit_s, self.say = flag, 60 * time_limit_minutes, say
        self.start_s = time.perf_counter()

    def on_start(self, step: int) -> None:
        self.start_s = time.perf_counter()

    def requests(self, step: int) -> set[str]:
        if self.limit_s and time.perf_counter() - self.start_s >= self.limit_s:
            self.flag.request()
        return {"stop"} if self.flag.signum is not None else set()

    def on_stop(self, step: int) -> None:
        self.say(f"stop requested (signal {self.flag.signum}); checkpointed step {step}; exit {EXIT_REQUEUE} "
                 f"(requeue)")
