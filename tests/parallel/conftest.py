"""Multi-rank runs shared by tests: several configurations per launch (launch_configs), made once per test run; the
scaling tests' runs of tests/parallel/plan_run.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import made_once
from tests.parallel.dist_run import launch

_GRADS = ["--no-weights", "--save-grads", "--global-batch", "8"]
PLAN_RUNS = {  # ranks: {configuration: plan_run.py arguments}; every configuration of a rank count in one launch
    4: {"n4l3m1": ["--ep", "2", "--dp-shard", "2", "--loops", "3", "--micro", "1"],
        "n4l6m2": ["--ep", "2", "--dp-shard", "2", "--loops", "6", "--micro", "2", *_GRADS],
        "hsdp4": ["--dp-replicate", "2", "--ep", "2", "--loops", "3", "--no-weights"]},
    2: {"n2l3m1": ["--ep", "2", "--dp-shard", "1", "--loops", "3", "--micro", "1", "--no-weights"],
        "hsdp2": ["--dp-replicate", "2", "--ep", "1", "--loops", "3", "--no-weights"]},
    1: {"n1l6m1": ["--loops", "6", "--micro", "1", *_GRADS]},
}


@pytest.fixture(scope="session")
def plan_runs(tmp_path_factory, worker_id):
    """run(ranks, configuration): [per-rank results] of PLAN_RUNS[ranks][configuration]."""
    dir_of = shared_launches(tmp_path_factory, worker_id, "plan_runs", PLAN_RUNS, worker="plan_run")
    return lambda nproc, name: [torch.load(dir_of(nproc) / f"{name}.pt.rank{r}", weights_only=True)
                                for r in range(nproc)]


@pytest.fixture(scope="session")
def scaling_runs(plan_runs):
    """{(ranks, loops, micro-batches): [per-rank results]}: dp2 x ep2 on 4 ranks (3 loops x 1 micro-batch, with the
    initial weights; 6 loops x 2 micro-batches of a global batch of 8, with gradients), ep2 on 2 ranks, and the
    1-rank reference of the 6-loop run; all built on meta like the trainer."""
    return {key: plan_runs(key[0], "n{}l{}m{}".format(*key)) for key in ((4, 3, 1), (4, 6, 2), (2, 3, 1), (1, 6, 1))}


@pytest.fixture(scope="session")
def hsdp_runs(plan_runs):
    """{ranks: [per-rank results]} under HSDP: 2 shard groups of 1 rank (2 ranks), and 2 groups of ep 2 (4 ranks);
    3 loops, 1 micro-batch."""
    return {nproc: plan_runs(nproc, f"hsdp{nproc}") for nproc in (2, 4)}


def launch_configs(nproc: int, d: Path, configs: dict[str, list[str]], timeout: float = 300,
                   worker: str = "dist_run") -> None:
    """Run several configurations of tests/parallel/WORKER.py (name: its arguments but --out, which is d/NAME.pt) one
    after another in ONE launch of `nproc` ranks: the per-process import and the process group are paid once, not
    per configuration. Each builds its own engine and device mesh from the same seeds and data as a launch of its
    own."""
    args = [a for name, extra in configs.items() for a in ("--then", "--out", str(d / f"{name}.pt"), *extra)]
    launch(nproc, [worker, *args[1:]], timeout, script=__file__)


def shared_launches(tmp_path_factory, worker_id, name: str, worlds: dict[int, dict[str, list[str]]], **kw):
    """dir_of(ranks): the directory of the one launch_configs launch of `ranks` ranks that runs every configuration
    of worlds[ranks], made on first use and once per test run (made_once)."""
    dirs: dict[int, Path] = {}

    def dir_of(nproc: int) -> Path:
        if nproc not in dirs:
            dirs[nproc] = made_once(tmp_path_factory, worker_id, f"{name}_{nproc}ranks",
                                    lambda d: launch_configs(nproc, d, worlds[nproc], **kw))
        return dirs[nproc]
    return dir_of


def _run_configs(worker: str, argv: list[str]) -> None:
    """Child side of launch_configs: WORKER.main for each '--then'-separated argument list, keeping the process
    group up between them (and undoing dist_run --no-defer's patch after its configuration)."""
    import importlib

    import mythos.errors
    import mythos.parallel.fsdp as fsdp_mod
    from mythos.parallel import DistEnv

    main = importlib.import_module(f"tests.parallel.{worker}").main
    configs: list[list[str]] = [[]]
    for a in argv:
        if a == "--then":
            configs.append([])
        else:
            configs[-1].append(a)
    shutdown, exit_, defer = DistEnv.shutdown, mythos.errors.exit_after_distributed, fsdp_mod._defer_post_backward
    DistEnv.shutdown, mythos.errors.exit_after_distributed = lambda self: None, lambda code: None
    for c in configs:
        main(c)
        fsdp_mod._defer_post_backward = defer
    DistEnv.shutdown, mythos.errors.exit_after_distributed = shutdown, exit_
    env = DistEnv.from_environment("cpu")
    env.shutdown()
    if env.world_size > 1:
        exit_(0)


if __name__ == "__main__":
    import sys
    _run_configs(sys.argv[1], sys.argv[2:])
