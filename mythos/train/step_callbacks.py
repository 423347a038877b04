"""The trainer's per-step callbacks (profiler, straggler report), built from the config. Each has
`on_step_start(step)` and `on_step_end(step, step_time_s) -> dict` (fields for the step's metrics record)."""
from __future__ import annotations

from pathlib import Path

from mythos.train.profile import StepProfiler
from mythos.train.stragglers import StragglerMonitor


def build_step_callbacks(cfg, env, run_dir: Path, model, metrics) -> list:
    m = cfg.metrics
    return [StepProfiler(cfg.profile.steps, run_dir, env.rank, model, env.device,
                         say=metrics.console, warn=metrics.warn),
            StragglerMonitor(env.world_size, env.rank, cfg.train.log_interval, m.straggler_factor,
                             m.straggler_intervals, env.device, warn=metrics.warn)]
