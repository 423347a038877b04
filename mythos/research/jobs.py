"""Run independent experiment pieces (an arm, a training run) one after another or in worker processes.

Every piece is seeded on its own and self-contained, so the results do not depend on `jobs`; workers are spawned
(not forked) and use one thread each."""
from __future__ import annotations

from typing import Callable


def _one_thread_call(fn, args):
    import torch
    torch.set_num_threads(1)
    return fn(*args)


def run_pieces(fn: Callable, pieces: list[tuple[str, tuple]], jobs: int, done: Callable[[str, object], None]) -> None:
    """Call fn(*args) for each (key, args); done(key, result) in the parent as each finishes."""
    if jobs <= 1:
        for key, args in pieces:
            done(key, fn(*args))
        return
    import concurrent.futures as cf
    import multiprocessing as mp
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_one_thread_call, fn, args): key for key, args in pieces}
        for fut in cf.as_completed(futures):
            done(futures[fut], fut.result())
