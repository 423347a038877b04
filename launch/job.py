"""What a submitit job runs on every task: the trainer, with submitit's checkpoint-and-requeue on top.

Signals (see mythos/train/signals.py): submitit installs its handlers when the task starts (USR2 ->
checkpoint_and_try_requeue, TERM -> log and ignore); `stop_flag()` then takes USR1/USR2/TERM over and keeps
submitit's handler. A signal only sets the flag; at the next step boundary every rank agrees, every rank saves the
same step, and the trainer returns EXIT_REQUEUE. Then, for USR1/USR2, rank 0 hands over to submitit's own handler,
which calls `checkpoint()` below (rank 0 only, as submitit always does), stores the resubmission, counts timeouts
against `slurm_max_num_timeout` and runs `scontrol requeue`. For TERM (scancel, `scontrol requeue`, preemption)
SLURM itself decides whether the job comes back; nothing is requeued from here, so a scancel stays cancelled.
"""
from __future__ import annotations

import os
import signal
import time

import submitit

WAIT_FOR_REQUEUE_S = 300


class TrainJob(submitit.helpers.Checkpointable):
    def __init__(self, config: str, overrides: list[str]) -> None:
        self.config = config
        self.overrides = list(overrides)

    def __call__(self) -> dict:
        from mythos.train.signals import EXIT_REQUEUE, stop_flag

        stop = stop_flag()  # first, before torch is imported
        from mythos.config import load_config, parse_overrides
        from mythos.train.trainer import run

        cfg = load_config(self.config, parse_overrides(self.overrides))
        rc = run(cfg)  # the exit code mythos-train would give (TrainingDiverged -> 3)
        signum, rank = stop.signum, int(os.environ.get("RANK", "0"))
        stop.clear()
        if rc == 0:
            stop.finished()
        result = {"exit": rc, "rank": rank, "run_dir": cfg.run.dir,
                  "restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0"))}
        if rc == EXIT_REQUEUE and signum in (signal.SIGUSR1, signal.SIGUSR2):
            self._requeue(stop.previous.get(signal.SIGUSR2), signum, rank)
        return result

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on rank 0 before it requeues. The state is already on disk: every rank saved the same
        step before the trainer returned (or, for a signal before training started, `checkpoints/latest` is
        still the last complete checkpoint). The resubmission resumes from it."""
        return submitit.helpers.DelayedSubmission(TrainJob(self.config, self.overrides))

    @staticmethod
    def _requeue(submitit_handler, signum: int, rank: int) -> None:
        if not callable(submitit_handler):
            return  # not under submitit (called directly): nothing to requeue
        if rank == 0:
            submitit_handler(signum, None)  # checkpoint() + scontrol requeue + exit; raises past the timeout budget
            return
        # Other ranks: the requeue ends this task (SIGTERM, now fatal again); returning would record a result for
        # an unfinished run.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        deadline = time.monotonic() + WAIT_FOR_REQUEUE_S
        while time.monotonic() < deadline:
            time.sleep(1)
        raise submitit.core.utils.UncompletedJobError(f"rank {rank}: job was not requeued within "
                                                      f"{WAIT_FOR_REQUEUE_S} s after checkpointing")
