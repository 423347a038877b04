"""Two ranks (gloo, one process per rank as srun starts them): a shard damaged on one rank makes both ranks fall back to
the same older checkpoint; a rank hanging at step 5 ends the job with the requeue code within the collective timeout
(+30 s), leaves a stack dump per rank, and a re-run resumes with the uninterrupted losses bit for bit.

The runs use test_checkpoint_reshard's options (expert parallelism 2, checkpoints every 2 steps), so its 2-rank run
(made once) is the uninterrupted reference here. Both tests read ONE hung-then-resumed job (`hung_then_resumed`): its
re-run is the hung test's resume and, with a damaged step-6 checkpoint put in as `latest` first, the damaged test's
fallback."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, made_once, read_metrics
from tests.parallel.dist_run import free_port
from tests.parallel.test_checkpoint_reshard import ep2_run, ep_args  # noqa: F401 (a fixture)

STEPS = 6
TIMEOUT_S = 10


def start(run: Path, data: Path, *extra: str, env_extra: dict | None = None) -> list[subprocess.Popen]:
    port = free_port()
    args = ep_args(run, data, STEPS, 2, *extra)
    procs = []
    for r in range(2):
        env = {**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env_extra or {})}
        procs.append(subprocess.Popen([sys.executable, "-m", *args], env=env, cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[str]:
    deadline = time.monotonic() + timeout
    try:
        return [p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def run_ok(run: Path, data: Path, *extra: str) -> str:
    procs = start(run, data, *extra)
    outs = finish(procs)
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    return outs[0]


def losses(run: Path, first: int) -> list[float]:
    m = read_metrics(run)
    return [m[s]["loss"] for s in range(first, STEPS + 1)]


@pytest.fixture(scope="module")
def reference(ep2_run) -> Path:
    """The uninterrupted run: only ever copied."""
    return ep2_run


def damaged_shard(run: Path) -> Path:
    """Rank 1's shard of `run`'s step-6 checkpoint: bytes 1000-1099 overwritten, same size (only its hash tells)."""
    return run / "checkpoints" / f"step_{STEPS:07d}" / "__1_0.distcp"


@pytest.fixture(scope="module")
def hung_then_resumed(reference, prepared_data, tmp_path_factory, worker_id) -> Path:
    """run/: a 2-rank job with rank 1 hung at step 5 (hang.json: the exit codes, the seconds from step 4's record
    to the end, both ranks' output; run/ as it was then is also checked there: `latest` is step 4), then ONE re-run
    (resume.log: rank 0's output) with new saves in the background, after the reference's step-6 checkpoint with
    rank 1's shard damaged was put in as `latest`. Made once per test run."""
    def make(d: Path) -> None:
        run = d / "run"
        procs = start(run, prepared_data, "--parallel.collective_timeout_s", str(TIMEOUT_S),
                      env_extra={"MYTHOS_FAULTS": "hang@5"})
        metrics = run / "metrics.jsonl"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (metrics.exists() and '"step": 4,' in metrics.read_text()):
            assert all(p.poll() is None for p in procs), finish(procs)
            time.sleep(0.05)
        t_step4 = time.monotonic()  # step 5 (and the hang) starts after step 4's checkpoint
        outs = finish(procs, timeout=TIMEOUT_S + 60)
        ck = run / "checkpoints"
        (d / "hang.json").write_text(json.dumps({
            "rcs": [p.returncode for p in procs], "elapsed": time.monotonic() - t_step4, "outs": outs,
            "latest": (ck / "latest").read_text().strip() if (ck / "latest").is_file() else None}))

        shutil.copytree(reference / "checkpoints" / f"step_{STEPS:07d}", ck / f"step_{STEPS:07d}")
        shard = damaged_shard(run)
        data = shard.read_bytes()
        shard.write_bytes(data[:1000] + random.Random(0).randbytes(100) + data[1100:])
        (ck / "latest").write_text(f"step_{STEPS:07d}\n")
        (d / "resume.log").write_text(run_ok(run, prepared_data, "--checkpoint.async_save", "true"))
    return made_once(tmp_path_factory, worker_id, "hung_then_resumed", make)


@pytest.mark.slow
def test_one_rank_shard_damaged_both_fall_back(hung_then_resumed, reference):
    """The step-6 checkpoint (the reference's) is damaged on rank 1 only; its step 4 is the hung job's own."""
    from mythos.checkpoint import manifest
    run, out = hung_then_resumed / "run", (hung_then_resumed / "resume.log").read_text()
    shard = damaged_shard(run)
    assert f"warning: checkpoint step_{STEPS:07d} unusable: {shard}: sha256 does not match" in out, out[-3000:]
    assert f"resumed from {run / 'checkpoints' / 'step_0000004'} at step 4" in out
    assert losses(run, 5) == losses(reference, 5)  # both ranks loaded step 4, or these would differ (or hang)
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step_{STEPS:07d}"
    assert manifest.verify(run / "checkpoints" / f"step_{STEPS:07d}") is None  # rewritten by the async 2-rank save


@pytest.mark.slow
def test_hung_rank_ends_job_for_requeue_and_resume_is_bitwise(hung_then_resumed, reference):
    from mythos.train.signals import EXIT_REQUEUE
    run, hang = hung_then_resumed / "run", json.loads((hung_then_resumed / "hang.json").read_text())
    outs, elapsed = hang["outs"], hang["elapsed"]
    assert hang["rcs"] == [EXIT_REQUEUE] * 2, "\n".join(o[-3000:] for o in outs)
    assert elapsed < TIMEOUT_S + 30, elapsed
    line = next(ln for ln in outs[0].splitlines() if ln.startswith("error: watchdog"))
    assert line.startswith("error: watchdog: step 5: rank 1 stopped answering (faults.py:"), line
    assert "Traceback" not in outs[0]
    assert f"stack dumps of every rank in {run / 'stacks'}" in line
    dumps = {r: (run / "stacks" / f"rank{r:05d}.txt").read_text() for r in range(2)}
    assert "in hook" in dumps[1] and "faults.py" in dumps[1]  # the hung rank's own stack
    assert "torch/distributed" in dumps[0]  # rank 0 was waiting in a collective
    assert hang["latest"] == "step_0000004"
    print(f"job ended {elapsed:.1f} s after step 4 with exit {EXIT_REQUEUE} (timeout {TIMEOUT_S} s)")

    out = (hung_then_resumed / "resume.log").read_text()  # the re-run (past the damaged step 6: the test above)
    assert f"resumed from {run / 'checkpoints' / 'step_0000004'} at step 4" in out
    assert losses(run, 5) == losses(reference, 5)
