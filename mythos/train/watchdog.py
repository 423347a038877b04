"""Hung-rank watchdog: a rank stuck in a collective or in I/O ends the job within `parallel.collective_timeout_s`.

A trainer callback: it beats once per step. When a rank sees no beat for the timeout, its watchdog thread dumps
the stacks of all its threads (faulthandler) to `RUN/stacks/rankNNNNN.txt`, reports where its main thread is over a
gloo group of its own (a hung rank's watchdog thread still answers there), and exits with the requeue code so SLURM
brings the job back from the last checkpoint. Ranks whose main thread waits inside torch.distributed are victims;
the others (or a rank that cannot even report) are the ones that stopped answering, and the lowest victim names
them in one line.
The process group's own timeout is set above this one (`pg_timeout_s`), so the library never fires first.
"""
from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from mythos.parallel import ranks
from mythos.train.callbacks import Callback
from mythos.train.signals import EXIT_REQUEUE

REPORT_S = 20.0  # how long the watchdogs wait for each other's reports


def pg_timeout_s(collective_timeout_s: float) -> float:
    """The process group's timeout: past the watchdog's firing and reporting."""
    return collective_timeout_s + REPORT_S + 30.0


def _main_thread_position() -> tuple[str, bool]:
    """('file:line in func' of the main thread's innermost frame, whether it is inside torch.distributed)."""
    frame = sys._current_frames().get(threading.main_thread().ident)
    while frame is not None and frame.f_code.co_filename == threading.__file__:
        frame = frame.f_back  # Event/Condition.wait: report their caller
    if frame is None:
        return "unknown", False
    code = frame.f_code
    where = f"{Path(code.co_filename).name}:{frame.f_lineno} in {code.co_name}"
    return where, f"torch{os.sep}distributed{os.sep}" in code.co_filename


class Watchdog(Callback):
    """A callback: its thread starts with the loop (on_start), each step beats (on_step_start), and it stops when
    the loop ends (on_stop, on_end)."""

    def __init__(self, run_dir: str | Path, timeout_s: float):
        self.stacks_dir = Path(run_dir) / "stacks"
        self.timeout_s = timeout_s
        self.rank, self.world = ranks.rank(), ranks.world()
        self.group = (dist.new_group(backend="gloo", timeout=timedelta(seconds=REPORT_S)) if ranks.distributed()
                      else None)
        self.step, self.last = 0, time.monotonic()
        self._stop = threading.Event()

    def start(self) -> "Watchdog":
        threading.Thread(target=self._run, name="mythos-watchdog", daemon=True).start()
        return self

    def beat(self, step: int) -> None:
        self.step, self.last = step, time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def on_start(self, step: int) -> None:
        self.start()

    def on_step_start(self, step: int) -> None:
        self.beat(step)

    def on_stop(self, step: int) -> None:
        self.stop()

    def on_end(self, step: int) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout_s / 10)):
            if time.monotonic() - self.last > self.timeout_s:
                self._fire()

    def _fire(self) -> None:
        step = self.step
        where, waiting = _main_thread_position()
        self.stacks_dir.mkdir(parents=True, exist_ok=True)
        with open(self.stacks_dir / f"rank{self.rank:05d}.txt", "w") as f:
            f.write(f"rank {self.rank}, step {step}: no progress for {self.timeout_s:g} s; main thread in {where}\n")
            f.flush()
            faulthandler.dump_traceback(file=f, all_threads=True)
        mine = {"rank": self.rank, "waiting": waiting, "where": where}
        reports = {self.rank: mine}
        if self.group is not None:
            try:
                reports = {r["rank"]: r for r in ranks.gather_objects(mine, self.group) if r}
            except Exception:  # noqa: BLE001 - a rank that cannot answer this is itself the news
                pass
        stopped = [r for r in range(self.world) if r not in reports or not reports[r]["waiting"]]
        speaker = min((r for r, rep in reports.items() if rep["waiting"]), default=min(reports))
        if self.rank == speaker:
            who = ("; ".join(f"rank {r} stopped answering ({reports[r]['where'] if r in reports else 'no report'})"
                             for r in stopped) or "every rank waits in a collective (no rank singled out)")
            print(f"error: watchdog: step {step}: {who}; no progress for {self.timeout_s:g} s "
                  f"(parallel.collective_timeout_s); stack dumps of every rank in {self.stacks_dir}; "
                  f"exit {EXIT_REQUEUE} (requeue)", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(EXIT_REQUEUE)
