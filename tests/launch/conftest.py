"""Fixtures of the SLURM tests: one real two-node cluster per session, the training arguments every job shares and
the uninterrupted `torchrun --nproc-per-node 2` reference run their losses must equal bit for bit."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, read_metrics, train_args
from tests.launch.slurm_cluster import SlurmCluster, unavailable_reason

STEPS = 24


@pytest.fixture(scope="session")
def slurm():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def job_env() -> dict:
    """What the jobs inherit (sbatch exports the submitter's environment): this checkout and this Python."""
    return {"PYTHONPATH": str(REPO), "MYTHOS_PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}


def job_train_args(run_dir: Path, data: Path, *extra: str) -> list[str]:
    """`--config FILE --key value ...` as mythos-train, the sbatch templates and mythos-submit all take them."""
    return train_args(run_dir, data, STEPS, "--checkpoint.interval", "2", "--checkpoint.keep", "2",
                      "--metrics.tensorboard", "false", *extra)[1:]


def losses(run_dir: Path) -> dict[int, float]:
    """step -> loss; a step logged twice (trained again after a resume) keeps its last value."""
    return {s: r["loss"] for s, r in read_metrics(run_dir).items()}


@pytest.fixture(scope="session")
def reference(prepared_data, tmp_path_factory) -> dict:
    """The uninterrupted torchrun reference: {"losses": step -> loss, "seconds": wall time, "records": by step}."""
    run = tmp_path_factory.mktemp("torchrun_ref") / "run"
    env = {**os.environ, **job_env()}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "mythos.train.cli", *job_train_args(run, prepared_data)],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = losses(run)
    assert sorted(out) == list(range(1, STEPS + 1))
    return {"losses": out, "seconds": time.monotonic() - t0, "records": read_metrics(run)}


@pytest.fixture(scope="session")
def reference_losses(reference) -> dict[int, float]:
    return reference["losses"]
