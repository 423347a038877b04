"""Per-rank step times and straggler warnings (Megatron's straggler detection, in the form a CPU/gloo run allows).

A callback (mythos/train/callbacks.py): `on_step_start(step)` before the step's work, `on_step_end(step,
step_time_s)` after it (1-based step).
Synchronous training makes every rank's wall time per step equal (the fast ranks wait inside the collectives), so
each step starts with a timed barrier (`metrics.straggler_factor > 0` only) and a rank's step time is measured from
there to the end of its own work: a rank slower than the others after the step's last collective shows as the
longer time, the others' wait falls into the next barrier, which is not counted.
Each log interval the ranks' mean step times over the interval are all-gathered; the record gets the median, the
max, the slowest rank and every rank's time (metrics.jsonl; the scalars go to TensorBoard), and a rank at
>= `factor` x the median for `intervals` intervals in a row is named in a warning (once per streak).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.distributed as dist

from mythos.train.callbacks import Callback


class StragglerMonitor(Callback):
    def __init__(self, world_size: int, rank: int, interval: int, factor: float, intervals: int,
                 device: torch.device, warn: Callable[[str], None] = print) -> None:
        self.world, self.rank, self.interval = world_size, rank, max(1, interval)
        self.factor, self.intervals, self.device, self.warn = factor, max(1, intervals), device, warn
        self.enabled = factor > 0 and world_size > 1 and dist.is_available() and dist.is_initialized()
        self.total_s, self.count = 0.0, 0
        self.streak = [0] * world_size
        self.barrier_s = 0.0

    def on_step_start(self, step: int) -> None:
        if self.enabled:
            t = time.perf_counter()
            dist.barrier()
            self.barrier_s = time.perf_counter() - t

    def on_step_end(self, step: int, step_time_s: float, **_) -> dict:
        """{"step_time_median_s", "step_time_max_s", "slowest_rank", "step_time_rank_s": [...]} at the end of a
        log interval (every rank must call it at the same steps), else {}."""
        if not self.enabled:
            return {}
        self.total_s += step_time_s
        self.count += 1
        if step % self.interval:
            return {}
        times = self.gather(self.total_s / self.count)
        self.total_s, self.count = 0.0, 0
        return self.judge(step, times)

    def gather(self, mean_s: float) -> list[float]:
        local = torch.tensor([mean_s], dtype=torch.float64,
                             device=self.device if self.device.type == "cuda" else "cpu")
        out = torch.empty(self.world, dtype=torch.float64, device=local.device)
        dist.all_gather_into_tensor(out, local)
        return out.tolist()

    def judge(self, step: int, times: list[float]) -> dict:
        """The interval's record, and a warning for a rank that has stayed slow long enough."""
        median = statistics.median(times)
        slowest = max(range(len(times)), key=times.__getitem__)
        for r, t in enumerate(times):
            self.streak[r] = self.streak[r] + 1 if median > 0 and t >= self.factor * median else 0
            if self.streak[r] == self.intervals and self.rank == 0:
                self.warn(f"straggler: rank {r} step time {t:.3f} s is {t / median:.2f}x the median "
                          f"{median:.3f} s for {self.intervals} log intervals in a row (up to step {step}; "
                          f"metrics.straggler_factor = {self.factor:g})")
        return {"step_time_median_s": median, "step_time_max_s": times[slowest], "slowest_rank": slowest,
                "step_time_rank_s": times}
