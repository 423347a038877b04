"""Sharded DCP checkpoints across world sizes, through the real CLI under torchrun: save at 2 ranks, resume at 1 and
at 4; the next losses match continuing at 2 (within 1e-5) at the same global data position. With expert parallelism
too: experts saved as (dp_shard, ep)-sharded DTensors load into plain tensors (1 rank) and into dp 2 x ep 2."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import REPO, read_metrics, train_args
from tests.parallel.dist_run import free_port

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


def torchrun_cmd(nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m"]
    return [TORCHRUN, "--nproc-per-node", str(nproc), "--max-restarts", "0", "--master-port", str(free_port()), "-m"]


def run(nproc: int, args: list[str], timeout: float = 300) -> str:
    """Run the CLI (under torchrun if nproc > 1) in its own session; on timeout the whole group is killed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(torchrun_cmd(nproc) + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=env, cwd=REPO, start_new_session=True)
    try:
        out = p.communicate(timeout=timeout)[0]
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 0, out[-5000:]
    return out


def rewind(src: Path, dst: Path, step: int) -> Path:
    """A copy of run `src` as it was right after checkpoint `step`."""
    shutil.copytree(src, dst)
    ck = dst / "checkpoints"
    for p in ck.iterdir():
        if p.name.startswith("step_") and int(p.name[5:12]) > step:
            shutil.rmtree(p)
    (ck / "latest").write_text(f"step_{step:07d}\n")
    return dst


def data_state(run_dir: Path, step: int) -> dict:
    return json.loads((run_dir / "checkpoints" / f"step_{step:07d}" / "trainer_state.json").read_text())["data"]


@pytest.mark.slow
def test_save_at_2_resume_at_1_and_4(prepared_data, tmp_path):
    """With expert parallelism (ep 2 at 2 and 4 ranks, plain tensors in one process). Plain FSDP resharding of the
    dense weights (4, 2 and 1 rank) is the HSDP test's below."""
    extra = ["--train.micro_batch", "1", "--parallel.ac", "loop"]
    ep = 2
    a = tmp_path / "two"
    run(2, train_args(a, prepared_data, 6, *extra, "--parallel.ep", str(ep)))  # checkpoints at 4 and 6
    ref = read_metrics(a)
    for nproc in (1, 4):
        d = rewind(a, tmp_path / f"n{nproc}", 4)
        run(nproc, train_args(d, prepared_data, 6, *extra, "--parallel.ep", str(ep if nproc > 1 else 1)))
        got = read_metrics(d)
        for step in (5, 6):
            assert abs(got[step]["loss"] - ref[step]["loss"]) <= 1e-5, (nproc, step, got[step], ref[step])
        assert data_state(d, 6) == data_state(a, 6)  # same global data position
        assert data_state(d, 6)["samples_consumed"] == 6 * 4


@pytest.mark.slow
def test_hsdp_checkpoint_resumes_under_fsdp_at_4_2_and_1(prepared_data, tmp_path):
    """Written under HSDP (2 shard groups x 2 ranks: the dense DTensors are (Replicate, Shard)), resumed with plain
    FSDP at 4 and 2 ranks and in one process; the next losses match continuing under HSDP."""
    extra = ["--train.micro_batch", "1", "--parallel.ac", "loop"]
    a = tmp_path / "hsdp"
    out = run(4, train_args(a, prepared_data, 6, *extra, "--parallel.dp_replicate", "2"))
    assert "world 4 = dp_replicate 2 x dp_shard 2 x ep 1" in out
    ref = read_metrics(a)
    for nproc in (4, 2, 1):
        d = rewind(a, tmp_path / f"n{nproc}", 4)
        run(nproc, train_args(d, prepared_data, 6, *extra, "--parallel.dp_replicate", "1"))
        got = read_metrics(d)
        for step in (5, 6):
            assert abs(got[step]["loss"] - ref[step]["loss"]) <= 1e-5, (nproc, step, got[step], ref[step])
        assert data_state(d, 6) == data_state(a, 6)
