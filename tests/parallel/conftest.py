"""Multi-rank runs shared by tests: the configurations that test modules register run in one launch per rank count
(launch_configs, over tests/mains.py), made once per test run; among them the scaling tests' runs of
tests/parallel/plan_run.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import made_once
from tests.mains import run_mains

_RUNS: dict[int, dict[str, list[str]]] = {}  # ranks: {"prefix.name": [worker, its arguments but --out]}


def register_runs(prefix: str, worlds: dict[int, dict[str, list[str]]], worker: str = "dist_run",
                  common: list[str] = ()) -> None:
    """Add configurations (ranks: {name: tests/parallel/WORKER.py arguments but --out and `common`}) to the shared
    launches. Test modules call it at import, so the launches hold the configurations of every module collected (the
    same set on every xdist worker, as xdist requires)."""
    for nproc, cases in worlds.items():
        for name, args in cases.items():
            _RUNS.setdefault(nproc, {})[f"{prefix}.{name}"] = [worker, *common, *args]


@pytest.fixture(scope="session")
def dist_runs(tmp_path_factory, worker_id):
    """out(ranks, "prefix.name"): the --out of that registered configuration, from the one launch of `ranks` ranks
    that runs every configuration registered for that rank count (launch_configs), made on first use and once per
    test run (made_once): the import and process-group cost of a launch is paid once per rank count."""
    dirs: dict[int, Path] = {}

    def out(nproc: int, name: str) -> Path:
        if nproc not in dirs:
            dirs[nproc] = made_once(tmp_path_factory, worker_id, f"dist_runs_{nproc}ranks",
                                    lambda d: launch_configs(nproc, d, _RUNS[nproc]))
        return dirs[nproc] / f"{name}.pt"
    return out


_GRADS = ["--no-weights", "--save-grads", "--global-batch", "8"]
register_runs("plan", {  # the scaling tests' runs, built on meta like the trainer
    4: {"n4l3m1": ["--ep", "2", "--dp-shard", "2", "--loops", "3", "--micro", "1"],
        "n4l6m2": ["--ep", "2", "--dp-shard", "2", "--loops", "6", "--micro", "2", *_GRADS],
        "hsdp4": ["--dp-replicate", "2", "--ep", "2", "--loops", "3", "--no-weights"]},
    2: {"n2l3m1": ["--ep", "2", "--dp-shard", "1", "--loops", "3", "--micro", "1", "--no-weights"],
        "hsdp2": ["--dp-replicate", "2", "--ep", "1", "--loops", "3", "--no-weights"]},
    1: {"n1l6m1": ["--loops", "6", "--micro", "1", *_GRADS]},
}, worker="plan_run")


def _plan_run(dist_runs, nproc: int, name: str) -> list[dict]:
    return [torch.load(f"{dist_runs(nproc, f'plan.{name}')}.rank{r}", weights_only=True) for r in range(nproc)]


@pytest.fixture(scope="session")
def scaling_runs(dist_runs):
    """{(ranks, loops, micro-batches): [per-rank results]}: dp2 x ep2 on 4 ranks (3 loops x 1 micro-batch, with the
    initial weights; 6 loops x 2 micro-batches of a global batch of 8, with gradients), ep2 on 2 ranks, and the
    1-rank reference of the 6-loop run."""
    return {key: _plan_run(dist_runs, key[0], "n{}l{}m{}".format(*key))
            for key in ((4, 3, 1), (4, 6, 2), (2, 3, 1), (1, 6, 1))}


@pytest.fixture(scope="session")
def hsdp_runs(dist_runs):
    """{ranks: [per-rank results]} under HSDP: 2 shard groups of 1 rank (2 ranks), and 2 groups of ep 2 (4 ranks);
    3 loops, 1 micro-batch."""
    return {nproc: _plan_run(dist_runs, nproc, f"hsdp{nproc}") for nproc in (2, 4)}


def launch_configs(nproc: int, d: Path, configs: dict[str, list[str]]) -> None:
    """Run several configurations (name: [worker, its arguments but --out, which is d/NAME.pt]) of
    tests/parallel/{dist_run,plan_run}.py one after another in ONE launch of `nproc` ranks (tests/mains.py): the
    per-process import and the process group are paid once, not per configuration. Each builds its own engine and
    device mesh from the same seeds and data as a launch of its own. A compiled configuration runs last, so its graph
    count is its own."""
    ordered = sorted(configs.items(), key=lambda c: "--compile" in c[1])
    run_mains(*[[f"tests.parallel.{worker}", "--out", d / f"{name}.pt", *extra] for name, (worker, *extra) in ordered],
              nproc=nproc, timeout=600, merge_stderr=True, check=True)  # a cold compile is ~40 s of it on 2 cores
