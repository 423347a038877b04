"""Sharded DCP checkpoints across world sizes, through the real CLI: save at 2 ranks, resume at 1 and at 4; the next
losses match continuing at 2 (within 1e-5) at the same global data position. With expert parallelism
too: experts saved as (dp_shard, ep)-sharded DTensors load into plain tensors (1 rank) and into dp 2 x ep 2.

The ranks are plain processes with env:// rendezvous, as srun starts them: torchrun would only add a launcher process
per run (its own behaviour is test_rank_failure's), not another checkpoint layout. The runs of one world size share
one launch (tests/mains.py's run_mains): each training is a fresh CLI `main` (its own mesh, engine and resume from
disk), only the interpreter and the process group are kept."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from tests.conftest import made_once, read_metrics, train_args
from tests.mains import run_mains


def main(argv: list[str]) -> None:
    """`python -m tests.parallel.test_checkpoint_reshard SRC DST STEP` in a shared launch (tests/mains.py): `rewind`,
    made by rank 0 while the other ranks wait at a barrier (the next run reads it)."""
    import torch.distributed as dist
    if int(os.environ.get("RANK", "0")) == 0:
        rewind(Path(argv[0]), Path(argv[1]), int(argv[2]))
    if dist.is_initialized():
        dist.barrier()


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


def hsdp_args(run_dir: Path, data: Path, dp_replicate: int) -> list[str]:
    """6 steps, one sequence per forward, per-loop checkpointing; HSDP with `dp_replicate` shard groups (1: FSDP)."""
    return train_args(run_dir, data, 6, "--train.micro_batch", "1", "--parallel.ac", "loop",
                      "--parallel.dp_replicate", str(dp_replicate))


@pytest.fixture(scope="module")
def ep2_run(prepared_data, tmp_path_factory, worker_id) -> Path:
    """6 steps at 2 ranks with ep 2 (checkpoints at 2, 4, 6): the save of the test below, and test_checkpoint_faults'
    uninterrupted reference; made once per test run (`made_once`), only ever copied."""
    d = made_once(tmp_path_factory, worker_id, "ep2_run",
                  lambda d: run_mains(ep_args(d / "run", prepared_data, 6, 2), nproc=2, timeout=300, merge_stderr=True,
                                      check=True))
    return d / "run"


@pytest.fixture(scope="module")
def resumed(ep2_run, prepared_data, tmp_path_factory, worker_id) -> Path:
    """Both tests' saves and resumes from step 4, in three launches (made once per test run) instead of seven:
    4 ranks: the HSDP save (hsdp/, its rank-0 log in hsdp.log), its FSDP resume at 4 (hsdp_n4/) and the ep resume at
    4 (ep_n4/); 2 ranks: the HSDP save's FSDP resume (hsdp_n2/); one process: both resumes in plain tensors (hsdp_n1/,
    ep_n1/). ep2_run (the ep save at 2 ranks) is its own launch: test_checkpoint_faults needs only that one."""
    data = prepared_data

    def make(d: Path) -> None:
        rewind(ep2_run, d / "ep_n4", 4)
        rewind(ep2_run, d / "ep_n1", 4)
        rewound = ["tests.parallel.test_checkpoint_reshard", d / "hsdp", d / "hsdp_n4", 4]
        hsdp = run_mains(hsdp_args(d / "hsdp", data, 2), rewound, hsdp_args(d / "hsdp_n4", data, 1),
                         ep_args(d / "ep_n4", data, 6, 2), nproc=4, merge_stderr=True, check=True)[0]
        (d / "hsdp.log").write_text(hsdp.stdout)
        run_mains(hsdp_args(rewind(d / "hsdp", d / "hsdp_n2", 4), data, 1), nproc=2, timeout=300, merge_stderr=True,
                  check=True)
        run_mains(hsdp_args(rewind(d / "hsdp", d / "hsdp_n1", 4), data, 1), ep_args(d / "ep_n1", data, 6, 1),
                  merge_stderr=True, check=True)
    return made_once(tmp_path_factory, worker_id, "reshard_resumed", make)


def assert_continues(got: Path, ref: Path) -> None:
    """Steps 5 and 6 after the resume from step 4: the losses of continuing `ref` (within 1e-5), at its global data
    position."""
    got_m, ref_m = read_metrics(got), read_metrics(ref)
    for step in (5, 6):
        assert abs(got_m[step]["loss"] - ref_m[step]["loss"]) <= 1e-5, (got, step, got_m[step], ref_m[step])
    assert data_state(got, 6) == data_state(ref, 6)  # same global data position


@pytest.mark.slow
def test_save_at_2_resume_at_1_and_4(ep2_run, resumed):
    """With expert parallelism (ep 2 at 2 and 4 ranks, plain tensors in one process). Plain FSDP resharding of the
    dense weights (4, 2 and 1 rank) is the HSDP test's below."""
    for nproc in (1, 4):
        assert_continues(resumed / f"ep_n{nproc}", ep2_run)
        assert data_state(resumed / f"ep_n{nproc}", 6)["samples_consumed"] == 6 * 4


@pytest.mark.slow
def test_hsdp_checkpoint_resumes_under_fsdp_at_4_2_and_1(resumed):
    """Written under HSDP (2 shard groups x 2 ranks: the dense DTensors are (Replicate, Shard)), resumed with plain
    FSDP at 4 and 2 ranks and in one process; the next losses match continuing under HSDP."""
    assert "world 4 = dp_replicate 2 x dp_shard 2 x ep 1" in (resumed / "hsdp.log").read_text()
    for nproc in (4, 2, 1):
        assert_continues(resumed / f"hsdp_n{nproc}", resumed / "hsdp")
