"""Multi-rank runs shared by the scaling tests (tests/parallel/plan_run.py, launched once per session)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import made_once
from tests.parallel.dist_run import launch

WORKER = str(Path(__file__).with_name("plan_run.py"))


@pytest.fixture(scope="session")
def scaling_runs(tmp_path_factory, worker_id):
    """{(ranks, loops, micro-batches): [per-rank results]}: dp2 x ep2 on 4 ranks (3 loops x 1 micro-batch, with the
    initial weights; 6 loops x 2 micro-batches of a global batch of 8, with gradients), ep2 on 2 ranks, and the
    1-rank reference of the 6-loop run; all built on meta like the trainer."""
    grads = ["--no-weights", "--save-grads", "--global-batch", "8"]
    cases = ((4, 3, 1, []), (4, 6, 2, grads), (2, 3, 1, ["--no-weights"]), (1, 6, 1, grads))

    def make(d: Path) -> None:
        for nproc, loops, micro, extra in cases:
            dims = ["--ep", "2", "--dp-shard", str(nproc // 2)] if nproc > 1 else []
            launch(nproc, ["--out", str(d / f"n{nproc}l{loops}m{micro}"), *dims, "--loops", str(loops), "--micro",
                           str(micro), *extra], script=WORKER)

    d = made_once(tmp_path_factory, worker_id, "scaling_runs", make)
    return {(nproc, loops, micro): [torch.load(d / f"n{nproc}l{loops}m{micro}.rank{r}", weights_only=True)
                                    for r in range(nproc)] for nproc, loops, micro, _ in cases}


@pytest.fixture(scope="session")
def hsdp_runs(tmp_path_factory, worker_id):
    """{ranks: [per-rank results]} under HSDP: 2 shard groups of 1 rank (2 ranks), and 2 groups of ep 2 (4 ranks);
    3 loops, 1 micro-batch."""
    def make(d: Path) -> None:
        for nproc in (2, 4):
            launch(nproc, ["--out", str(d / f"hsdp{nproc}"), "--dp-replicate", "2", "--ep", str(nproc // 2), "--loops",
                           "3", "--no-weights"], script=WORKER)

    d = made_once(tmp_path_factory, worker_id, "hsdp_runs", make)
    return {nproc: [torch.load(d / f"hsdp{nproc}.rank{r}", weights_only=True) for r in range(nproc)]
            for nproc in (2, 4)}
