"""Exact resume on CPU: a killed-and-resumed run logs bitwise the losses of an uninterrupted one."""
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from tests.conftest import REPO, made_once, read_metrics, run_cli, train_args

STEPS = 30


@pytest.fixture(scope="session")  # not module: the slow-first order splits the module's tests
def reference_run(prepared_data, tmp_path_factory, worker_id):
    """The uninterrupted run, made once for both xdist workers (the tests read only its metrics and file names)."""
    def make(d):
        r = run_cli(train_args(d / "run", prepared_data, STEPS))
        assert r.returncode == 0, r.stderr

    return made_once(tmp_path_factory, worker_id, "resume_reference", make) / "run"


def _start(args, env_extra=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_step(proc, run, step, timeout=300):
    deadline = time.time() + timeout
    path = run / "metrics.jsonl"
    while time.time() < deadline:
        assert proc.poll() is None, f"trainer exited early: {proc.communicate()[1]}"
        if path.exists() and any(f'"step": {s},' in path.read_text() for s in range(step, STEPS)):
            return
        time.sleep(0.02)
    raise AssertionError("step never reached")


def _losses(run, first, last):
    m = read_metrics(run)
    return [m[s]["loss"] for s in range(first, last + 1)]


@pytest.fixture(scope="module")
def killed_twice(prepared_data, tmp_path_factory) -> SimpleNamespace:
    """One run killed twice, shared by the two kill tests: first while writing step 8's checkpoint (MYTHOS_FAULTS),
    then, resumed from step 4, by SIGKILL once past step 12; a third process resumes it to the end. Each resume is
    checked against the reference run, so both kills are shown as if run apart, with one process fewer."""
    run = tmp_path_factory.mktemp("killed") / "run"
    ckpts, args = run / "checkpoints", train_args(run, prepared_data, STEPS)
    k = SimpleNamespace(run=run, ckpts=ckpts, args=args)
    k.writing = run_cli(args, env_extra={"MYTHOS_FAULTS": "checkpoint_write@8"})
    k.latest_after_writing = (ckpts / "latest").read_text().strip() if (ckpts / "latest").is_file() else None
    k.tmp8_left = (ckpts / "step_0000008.tmp").is_dir() and not (ckpts / "step_0000008").exists()
    proc = _start(args)
    _wait_for_step(proc, run, 12)
    proc.send_signal(signal.SIGKILL)
    k.resumed_then_killed = proc.communicate()[0]
    k.killed_at = max(read_metrics(run))
    k.tmp8_gone = not (ckpts / "step_0000008.tmp").exists()
    k.final = run_cli(args)
    return k


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_exact(reference_run, killed_twice):
    k = killed_twice
    assert 12 <= k.killed_at < STEPS
    assert k.final.returncode == 0, k.final.stderr
    assert "resumed from" in k.final.stdout
    ref, resumed = _losses(reference_run, 13, STEPS), _losses(k.run, 13, STEPS)
    assert resumed == ref  # bitwise: floats round-trip exactly through JSON
    assert sorted(read_metrics(k.run)) == list(range(1, STEPS + 1))  # no duplicated steps after resume


@pytest.mark.slow
def test_kill_while_writing_checkpoint_keeps_latest(reference_run, killed_twice):
    k = killed_twice
    assert k.writing.returncode == -signal.SIGKILL, k.writing.stderr
    assert k.latest_after_writing == "step_0000004"
    assert k.tmp8_left
    assert "resumed from" in k.resumed_then_killed and "step_0000004" in k.resumed_then_killed
    assert k.tmp8_gone
    assert k.final.returncode == 0, k.final.stderr
    assert _losses(k.run, 5, STEPS) == _losses(reference_run, 5, STEPS)  # 5-12 from the second process, then the third


def test_sigterm_checkpoints_and_exits_for_requeue(reference_run, prepared_data, tmp_path):
    from mythos.train.signals import EXIT_REQUEUE
    run = tmp_path / "run"
    args = train_args(run, prepared_data, STEPS, "--checkpoint.interval", "0")
    proc = _start(args)
    _wait_for_step(proc, run, 5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_REQUEUE, err
    stopped = max(read_metrics(run))
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step_{stopped:07d}"
    r = run_cli(args)
    assert r.returncode == 0, r.stderr
    assert _losses(run, stopped + 1, STEPS) == _losses(reference_run, stopped + 1, STEPS)


def test_checkpoint_keep_prunes_old(reference_run):
    names = sorted(p.name for p in (reference_run / "checkpoints").iterdir())
    assert names == ["latest", "step_0000024", "step_0000028", "step_0000030"]


@pytest.mark.slow
def test_nonfinite_steps_skipped_then_stop(prepared_data, tmp_path):
    """One run shows both: a lone non-finite step (3) is skipped and training goes on (step 4 trains and is
    checkpointed, and the streak starts again), then three in a row (5-7) stop it; the stopped run resumes."""
    run = tmp_path / "run"
    cli = train_args(run, prepared_data, 10, "--checkpoint.interval", "2")
    r = run_cli(cli, env_extra={"MYTHOS_FAULTS": "nan_loss@3,nan_loss@5,nan_loss@6,nan_loss@7"})
    assert r.returncode == 3, r.stderr
    assert "step 3: non-finite loss" in r.stderr
    assert sorted(read_metrics(run)) == [1, 2, 4]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training diverged: 3 non-finite steps in a row") and "Traceback" not in r.stderr
    assert "stopped at step 7" in last  # the good step 4 ended step 3's streak
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000004"
    r = run_cli(cli)
    assert r.returncode == 0 and "resumed from" in r.stdout, r.stderr
