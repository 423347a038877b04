"""Preemption signals: a handler only sets a flag; the trainer checks it at the step boundary, all ranks agree
through an all-reduce, save together and exit with EXIT_REQUEUE.

Which signal does what (README "SLURM"): SIGUSR1 (the sbatch templates' `--signal`), SIGUSR2 (submitit's
timeout/preemption signal) and SIGTERM (scancel, `scontrol requeue`, preemption) all mean "checkpoint at the next
step boundary and stop". What happens next is the launcher's business: the templates requeue on exit 75, submitit's
own handler (kept, and called by launch/job.py once every rank has saved) requeues on USR1/USR2.

The flag is process-wide and installed by the entry points before anything slow (importing torch, building the
model, loading a checkpoint): a signal that arrives before a handler exists kills the process (exit 138 for USR1).
This module imports nothing heavy for that reason.
"""
from __future__ import annotations

import signal

from mythos import errors

# sysexits' EX_TEMPFAIL: "try again later". launch/ and slurm/ scripts requeue on it.
EXIT_REQUEUE = 75
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class StopFlag:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, object] = {}  # the handlers this one replaced (submitit's, under submitit)

    def install(self) -> "StopFlag":
        for s in SIGNALS:
            old = signal.signal(s, self._handle)
            if old != self._handle:
                self.previous[s] = old
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.signum = self.signum or signum
        if signum == signal.SIGTERM:
            errors.terminated = True  # a silent rank with an error must not then wait for the SIGTERM it swallowed

    def request(self) -> None:
        """Ask for a clean stop (e.g. a wall-time limit), the same way a signal does."""
        self.signum = self.signum or -1

    def clear(self) -> None:
        self.signum = None

    def finished(self) -> None:
        """The run is complete: a late time-limit warning (USR1/USR2) must not kill the process while it exits
        (Python restores default handlers at shutdown, ignored signals stay ignored)."""
        for s in (signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(s, signal.SIG_IGN)


_PROCESS_FLAG: StopFlag | None = None


def stop_flag() -> StopFlag:
    """The process's StopFlag, installed on first use. Entry points call it first thing; the trainer reuses it, so
    a signal received during start-up still stops the run at its first step boundary (exit 75)."""
    global _PROCESS_FLAG
    if _PROCESS_FLAG is None:
        _PROCESS_FLAG = StopFlag().install()
    return _PROCESS_FLAG
