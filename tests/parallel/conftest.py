"""Multi-rank runs shared by the scaling tests (tests/parallel/plan_run.py, launched once per session)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.parallel.dist_run import launch

WORKER = str(Path(__file__).with_name("plan_run.py"))


@pytest.fixture(scope="session")
def scaling_runs(tmp_path_factory):
    """{(ranks, loops, micro-batches): [per-rank results]}: dp2 x ep2 on 4 ranks (3 loops x 1 micro-batch, with the
    initial weights; 6 loops x 2 micro-batches of a global batch of 8, with gradients), ep2 on 2 ranks, and the
    1-rank reference of the 6-loop run; all built on meta like the trainer."""
    d = tmp_path_factory.mktemp("scaling")
    runs = {}
    grads = ["--no-weights", "--save-grads", "--global-batch", "8"]
    for nproc, loops, micro, extra in ((4, 3, 1, []), (4, 6, 2, grads), (2, 3, 1, ["--no-weights"]), (1, 6, 1, grads)):
        out = d / f"n{nproc}l{loops}m{micro}"
        dims = ["--ep", "2", "--dp-shard", str(nproc // 2)] if nproc > 1 else []
        launch(nproc, ["--out", str(out), *dims, "--loops", str(loops), "--micro", str(micro), *extra], script=WORKER)
        runs[(nproc, loops, micro)] = [torch.load(f"{out}.rank{r}", weights_only=True) for r in range(nproc)]
    return runs


@pytest.fixture(scope="session")
def hsdp_runs(tmp_path_factory):
    """{ranks: [per-rank results]} under HSDP: 2 shard groups of 1 rank (2 ranks), and 2 groups of ep 2 (4 ranks);
    3 loops, 1 micro-batch."""
    d = tmp_path_factory.mktemp("hsdp")
    runs = {}
    for nproc in (2, 4):
        out = d / f"hsdp{nproc}"
        launch(nproc, ["--out", str(out), "--dp-replicate", "2", "--ep", str(nproc // 2), "--loops", "3",
                       "--no-weights"], script=WORKER)
        runs[nproc] = [torch.load(f"{out}.rank{r}", weights_only=True) for r in range(nproc)]
    return runs
