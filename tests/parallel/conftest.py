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


def launch_configs(nproc: int, d: Path, configs: dict[str, list[str]], timeout: float = 300) -> dict[str, Path]:
    """Run several tests/parallel/dist_run.py configurations (name: its arguments but --out) one after another in ONE
    launch of `nproc` ranks: the per-process import and the process group are paid once, not per configuration. Each
    builds its own engine and device mesh from the same seeds and data as a launch of its own; returns {name: --out}."""
    outs = {name: d / f"{name}.pt" for name in configs}
    args = [a for name, extra in configs.items() for a in ("--then", "--out", str(outs[name]), *extra)]
    launch(nproc, args[1:], timeout, script=__file__)
    return outs


def _run_configs(argv: list[str]) -> None:
    """Child side of launch_configs: dist_run.main for each '--then'-separated argument list, keeping the process
    group up between them (and undoing --no-defer's patch after its configuration)."""
    import mythos.errors
    import mythos.parallel.fsdp as fsdp_mod
    from mythos.parallel import DistEnv
    from tests.parallel import dist_run

    configs: list[list[str]] = [[]]
    for a in argv:
        if a == "--then":
            configs.append([])
        else:
            configs[-1].append(a)
    shutdown, exit_, defer = DistEnv.shutdown, mythos.errors.exit_after_distributed, fsdp_mod._defer_post_backward
    DistEnv.shutdown, mythos.errors.exit_after_distributed = lambda self: None, lambda code: None
    for c in configs:
        dist_run.main(c)
        fsdp_mod._defer_post_backward = defer
    DistEnv.shutdown, mythos.errors.exit_after_distributed = shutdown, exit_
    env = DistEnv.from_environment("cpu")
    env.shutdown()
    if env.world_size > 1:
        exit_(0)


if __name__ == "__main__":
    import sys
    _run_configs(sys.argv[1:])
