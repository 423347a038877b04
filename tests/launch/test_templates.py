"""The sbatch templates on the real two-node SLURM: full runs, `scontrol requeue`, a stop signal during start-up,
scancel. Every run's losses must equal the uninterrupted `torchrun --nproc-per-node 2` reference bit for bit."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import REPO, read_metrics
from tests.launch.conftest import STEPS, job_env, job_train_args, losses

pytestmark = pytest.mark.slow


def submit_template(slurm, template: str, run: Path, data: Path, *sbatch_args: str, env: dict | None = None) -> str:
    run.mkdir(parents=True)
    return slurm.sbatch("--nodes", "2", "--ntasks-per-node", "1", "--time", "10", "--chdir", str(run),
                        "--output", str(run / "slurm-%j.out"), *sbatch_args, str(REPO / "slurm" / template),
                        *job_train_args(run, data), env={**job_env(), **(env or {})})


def log(run: Path, job: str) -> str:
    return (run / f"slurm-{job}.out").read_text()


def wait_for(pred, timeout: float = 180, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.mark.parametrize("template,env", [("train.sbatch", {}),
                                          ("train_torchrun.sbatch", {"MYTHOS_NPROC_PER_NODE": "1"})])
def test_template_runs_across_two_nodes(slurm, prepared_data, reference_losses, tmp_path, template, env):
    run = tmp_path / "run"
    job = submit_template(slurm, template, run, prepared_data, env=env)
    info = slurm.wait_done(job)
    out = log(run, job)
    assert info["JobState"] == "COMPLETED", out[-3000:] + slurm.diagnose(job)
    assert info["NodeList"] == "node[1-2]"
    assert "world 2" in out
    assert losses(run) == reference_losses
    assert {r["world_size"] for r in read_metrics(run).values()} == {2}  # metrics.jsonl says so too


def test_scontrol_requeue_resumes_bitwise(slurm, prepared_data, reference_losses, tmp_path):
    run = tmp_path / "run"
    job = submit_template(slurm, "train.sbatch", run, prepared_data)
    wait_for(lambda: (run / "checkpoints" / "latest").exists(), what="the first checkpoint")
    r = slurm.scontrol("requeue", job)
    assert r.returncode == 0, r.stderr
    info = slurm.wait_done(job)
    out = log(run, job)
    assert info["JobState"] == "COMPLETED", out[-3000:] + slurm.diagnose(job)
    assert int(info["Restarts"]) >= 1 and "resumed from" in out
    assert losses(run) == reference_losses


def test_signal_during_startup_exits_75_and_requeues(slurm, prepared_data, reference_losses, tmp_path):
    """USR1 while every rank is in start-up (its handlers installed, the model not yet built): exit 75, requeued by
    the template, then the run completes. Deterministic at any load: the first attempt's start-up waits at a gate
    (fault `startup_gate@0`, which writes startup_gate.rankN) until its signal arrives; the test signals only once
    both ranks are there."""
    run = tmp_path / "run"
    job = submit_template(slurm, "train.sbatch", run, prepared_data, env={"MYTHOS_FAULTS": "startup_gate@0"})
    wait_for(lambda: all((run / f"startup_gate.rank{r}").exists() for r in (0, 1)), what="both ranks at the gate")
    assert not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text(), "too late: already trained"
    slurm.scancel("--signal=USR1", job)
    info = slurm.wait_done(job)
    out = log(run, job)
    assert info["JobState"] == "COMPLETED", out[-3000:] + slurm.diagnose(job)
    assert "stop requested (signal 10); checkpointed step 1; exit 75" in out
    assert "requeueing job" in out and int(info["Restarts"]) >= 1
    assert losses(run) == reference_losses


def test_scancel_leaves_a_valid_latest_and_a_new_job_resumes(slurm, prepared_data, reference_losses, tmp_path):
    run = tmp_path / "run"
    job = submit_template(slurm, "train.sbatch", run, prepared_data)
    wait_for(lambda: (run / "checkpoints" / "latest").exists(), what="the first checkpoint")
    slurm.scancel(job)
    assert slurm.wait_done(job)["JobState"] == "CANCELLED"
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert (run / "checkpoints" / latest).is_dir()
    again = slurm.sbatch("--nodes", "2", "--ntasks-per-node", "1", "--time", "10", "--chdir", str(run),
                         "--output", str(run / "slurm-%j.out"), str(REPO / "slurm" / "train.sbatch"),
                         *job_train_args(run, prepared_data), env=job_env())
    info = slurm.wait_done(again)
    out = log(run, again)
    assert info["JobState"] == "COMPLETED", out[-3000:] + slurm.diagnose(again)
    assert f"resumed from {run / 'checkpoints' / latest}" in out or "resumed from" in out
    assert losses(run) == reference_losses
    assert max(losses(run)) == STEPS
