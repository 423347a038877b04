"""Preemption signals: a handler only sets a flag; the trainer checks it at the step boundary, all ranks agree
through an all-reduce, save together and exit with EXIT_REQUEUE."""
from __future__ import annotations

import signal

import torch
import torch.distributed as dist

# sysexits' EX_TEMPFAIL: "try again later". launch/ and slurm/ scripts requeue on it.
EXIT_REQUEUE = 75
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class StopFlag:
    def __init__(self) -> None:
        self.signum: int | None = None

    def install(self) -> "StopFlag":
        for s in SIGNALS:
            signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.signum = signum

    def request(self) -> None:
        """Ask for a clean stop (e.g. a wall-time limit), the same way a signal does."""
        self.signum = self.signum or -1

    def agree(self, device: torch.device, *more: bool) -> list[bool]:
        """[stop requested on any rank, then each of `more` set on any rank]: every step-boundary decision in one
        all-reduce, so all ranks act together."""
        flags = torch.tensor([self.signum is not None, *more], dtype=torch.float32, device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return [f > 0 for f in flags.tolist()]
