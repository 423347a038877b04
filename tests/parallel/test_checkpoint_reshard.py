"""Sharded DCP checkpoints across world sizes, through the real CLI: save at 2 ranks, resume at 1 and at 4; the next
losses match continuing at 2 (within 1e-5) at the same global data position. With expert parallelism
too: experts saved as (dp_shard, ep)-sharded DTensors load into plain tensors (1 rank) and into dp 2 x ep 2.

The ranks are plain processes with env:// rendezvous, as srun starts them: torchrun would only add a launcher process
per run (its own behaviour is test_rank_failure's), not another checkpoint layout."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.conftest import made_once, read_metrics, train_args
from tests.parallel.dist_run import start, wait


def run(nproc: int, args: list[str], timeout: float = 300) -> str:
    """Run the CLI as `nproc` ranks (one process if nproc == 1); rank 0's output. Any rank left at timeout is killed."""
    rcs, outs = wait(start(nproc, ["-m", *args]), timeout)
    assert rcs == [0] * nproc, "\n".join(o[-3000:] for o in outs)
    return outs[0]


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


def ep_args(run_dir: Path, data: Path, steps: int, ep: int, *extra: str) -> list[str]:
    """One sequence per forward, per-loop checkpointing, expert parallelism `ep`, checkpoints every 2 steps."""
    return train_args(run_dir, data, steps, "--train.micro_batch", "1", "--parallel.ac", "loop",
                      "--checkpoint.interval", "2", "--parallel.ep", str(ep), *extra)


@pytest.fixture(scope="module")
def ep2_run(prepared_data, tmp_path_factory, worker_id) -> Path:
    """6 steps at 2 ranks with ep 2 (checkpoints at 2, 4, 6): the save of the test below, and test_checkpoint_faults'
    uninterrupted reference; made once per test run (`made_once`), only ever copied."""
    d = made_once(tmp_path_factory, worker_id, "ep2_run", lambda d: run(2, ep_args(d / "run", prepared_data, 6, 2)))
    return d / "run"


@pytest.mark.slow
def test_save_at_2_resume_at_1_and_4(ep2_run, prepared_data, tmp_path):
    """With expert parallelism (ep 2 at 2 and 4 ranks, plain tensors in one process). Plain FSDP resharding of the
    dense weights (4, 2 and 1 rank) is the HSDP test's below."""
    a = ep2_run
    ref = read_metrics(a)
    for nproc in (1, 4):
        d = rewind(a, tmp_path / f"n{nproc}", 4)
        run(nproc, ep_args(d, prepared_data, 6, 2 if nproc > 1 else 1))
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
