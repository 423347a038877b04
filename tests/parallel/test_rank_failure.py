"""SIGKILL of one rank under torchrun: the job ends within a bounded time (no hang) and resumes from `latest` (the
resume is launched as a plain process: what it shows is the checkpoint, not torchrun again)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, read_metrics, train_args
from tests.mains import run_mains
from tests.parallel.dist_run import free_port

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))

BOUND_S = 60.0  # torchrun's agent SIGTERMs the surviving ranks (SIGKILL after its own 30 s grace)


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_sigkill_one_rank_ends_job_and_resume_works(prepared_data, tmp_path):
    run_dir = tmp_path / "run"
    args = train_args(run_dir, prepared_data, 2000, "--checkpoint.interval", "2", "--parallel.ac", "loop")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [TORCHRUN, "--nproc-per-node", "2", "--max-restarts", "0", "--master-port", str(free_port()), "-m", *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=env, cwd=REPO, start_new_session=True)
    try:
        latest = run_dir / "checkpoints" / "latest"
        deadline = time.monotonic() + 180
        while not latest.is_file() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.5)
        assert latest.is_file(), "no checkpoint written"
        workers = children(p.pid)
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGKILL)
        t0 = time.monotonic()
        out = p.communicate(timeout=BOUND_S)[0]
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode != 0, out[-3000:]
    assert elapsed < BOUND_S
    assert not alive(workers[0]), "surviving rank still running after torchrun exited"
    print(f"torchrun exited {elapsed:.1f} s after SIGKILL of one rank (rc {p.returncode})")

    step = int(latest.read_text().strip()[5:])
    # one process resumes: it loads every rank's shards of the killed job's checkpoint (the 2 ranks' loads together
    # read the same files; that a 2-rank save resumes exactly in one process is test_checkpoint_reshard's)
    [resumed] = run_mains(train_args(run_dir, prepared_data, step + 2, "--checkpoint.interval", "2",
                                     "--parallel.ac", "loop"), timeout=300, merge_stderr=True, check=True)
    out = resumed.stdout
    assert f"resumed from {run_dir / 'checkpoints' / f'step_{step:07d}'}" in out, out[-3000:]
    assert step + 2 in read_metrics(run_dir)
