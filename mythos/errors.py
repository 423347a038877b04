"""One error type for bad user input: CLIs print it as one line and exit 2, never a traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable


class UserError(Exception):
    """Bad input from the user (a file, a key, a value). The message names what and what was expected."""


class SameOnEveryRank(UserError):
    """A UserError that depends only on the config and the world size (a batch that does not split, a mesh that
    does not fit): every rank of a launch raises it, so only rank 0 prints it."""


EXIT_USER_ERROR = 2
SILENT_RANK_WAIT_S = 30.0  # how long a silent rank waits for the launcher to end it after rank 0 reported
terminated = False  # a SIGTERM was received and kept by mythos.train.signals.StopFlag (a launcher ending the ranks)


def _launch_rank() -> int:
    """This process's rank under torchrun (RANK) or srun (SLURM_PROCID); 0 when launched alone."""
    import os
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def launched_world_size() -> int:
    """The world size torchrun (WORLD_SIZE) or srun (SLURM_NTASKS, one process per task) gives this process."""
    import os
    if os.environ.get("WORLD_SIZE", "").isdigit():
        return int(os.environ["WORLD_SIZE"])
    if "SLURM_PROCID" in os.environ and os.environ.get("SLURM_NTASKS", "").isdigit():
        return int(os.environ["SLURM_NTASKS"])
    return 1


def exit_after_distributed(rc: int) -> None:
    """End a process that ran collectives without interpreter finalization. Gloo's C++ worker threads can abort the
    process ("terminate called without an active exception", SIGABRT) while Python tears down, even after
    destroy_process_group (pytorch#179291); a launcher would read that as a failure. Call it only once every file is
    closed and the process group is destroyed."""
    import os
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def _report(msg: str) -> None:
    """`error: msg` on stderr; under torchrun also into its error file, so its failure summary shows this line
    as the root cause instead of a pointer to its docs."""
    import json
    import os
    import time
    print(f"error: {msg}", file=sys.stderr, flush=True)
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        try:
            with open(path, "w") as f:
                json.dump({"message": {"message": f"error: {msg}", "extraInfo": {
                    "py_callstack": f"error: {msg}", "timestamp": str(int(time.time()))}}}, f)
        except OSError:
            pass


def _leave_it_to_rank0() -> None:
    """A rank other than 0 with an error rank 0 reports too: exit only after rank 0 had time to print (a launcher
    kills the remaining ranks when the first one exits, which could otherwise be this silent one)."""
    import signal
    import time
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the launcher's SIGTERM ends the wait
    if not terminated:  # it came already (and the stop flag kept it): rank 0 is gone
        time.sleep(SILENT_RANK_WAIT_S)


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a console-script main so a UserError becomes `error: <msg>` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            rc = main(*args, **kwargs)
        except UserError as e:
            if isinstance(e, SameOnEveryRank) and _launch_rank() != 0:
                _leave_it_to_rank0()
            else:
                _report(str(e))
            if launched_world_size() > 1 and "torch.distributed" in sys.modules:
                exit_after_distributed(EXIT_USER_ERROR)  # the run's finally already destroyed the process group
            raise SystemExit(EXIT_USER_ERROR)
        return 0 if rc is None else rc

    return wrapped
