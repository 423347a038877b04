"""The trainer's callbacks, built once from the config in the order every hook calls them (callbacks.py): the
watchdog beats first, then the faults (MYTHOS_FAULTS only), checkpoint commits, the profiler and the straggler
barrier; at a step's end the profiler's and straggler report's record fields come before the metrics line that
writes them, validation after it."""
from __future__ import annotations

from pathlib import Path

from mythos.config import Config
from mythos.parallel import DistEnv
from mythos.train.callbacks import Callback, CallbackList, Checkpointing, StopRequests, Validation
from mythos.train.counters import RunCounters
from mythos.train.metrics import MetricsLogger
from mythos.train.profile import StepProfiler
from mythos.train.signals import StopFlag
from mythos.train.step_metrics import StepMetrics
from mythos.train.stragglers import StragglerMonitor
from mythos.train.watchdog import Watchdog


def build_callbacks(cfg: Config, env: DistEnv, run_dir: Path, engine, parts: dict, counters: RunCounters,
                    metrics: MetricsLogger, stop: StopFlag, fault: Callback | None) -> CallbackList:
    """`parts`: the run's checkpointed Stateful parts (Engine.save); `fault`: the fault callback or None."""
    m, model = cfg.metrics, engine.model
    step_metrics = StepMetrics(cfg, env, metrics, counters)  # prints the MFU peak before the watchdog's group forms
    return CallbackList([
        Watchdog(run_dir, cfg.parallel.collective_timeout_s),
        fault,
        Checkpointing(cfg, engine, parts, metrics),
        StepProfiler(cfg.profile.steps, run_dir, env.rank, model, env.device, say=metrics.console, warn=metrics.warn),
        StragglerMonitor(env.world_size, env.rank, cfg.train.log_interval, m.straggler_factor, m.straggler_intervals,
                         env.device, warn=metrics.warn),
        step_metrics,
        Validation(cfg, env, model, metrics),
        StopRequests(stop, cfg.train.time_limit_minutes, metrics.console),
    ], env.device)
