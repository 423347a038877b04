"""Fault injection for tests of failure paths: MYTHOS_FAULTS="where@step[,where@step...]".

`checkpoint_write@N` SIGKILLs the process in the middle of writing checkpoint N (after its shards are written, before
the commit; with async saves this is in the background writer); `nan_loss@N` makes step N's loss non-finite;
`hang@N` makes the last rank hang at the start of step N (blocked, as in stuck I/O) for the watchdog to find;
`slow_startup@S` adds S seconds to start-up before the model is built (a signal sent then lands in start-up on any
machine).
Unset in normal runs, where `hook` does nothing.
"""
from __future__ import annotations

import os
import signal
import threading
import time


def _parse() -> set[tuple[str, int]]:
    spec = os.environ.get("MYTHOS_FAULTS", "")
    out = set()
    for item in filter(None, (s.strip() for s in spec.split(","))):
        where, _, step = item.partition("@")
        out.add((where, int(step)))
    return out


_FAULTS = _parse()


def active(where: str, step: int) -> bool:
    return (where, step) in _FAULTS


def hook(where: str, step: int) -> None:
    if where == "startup":
        time.sleep(sum(s for w, s in _FAULTS if w == "slow_startup"))
    if where == "checkpoint_write" and active(where, step):
        os.kill(os.getpid(), signal.SIGKILL)
    if where == "step" and active("hang", step):
        if int(os.environ.get("RANK", "0")) == int(os.environ.get("WORLD_SIZE", "1")) - 1:
            threading.Event().wait()  # forever, GIL released: only the watchdog thread still runs
