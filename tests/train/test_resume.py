"""Exact resume on CPU: a killed-and-resumed run logs bitwise the losses of an uninterrupted one."""
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from types import SimpleNamespace

import pytest

from tests.conftest import REPO, made_once, read_metrics, run_cli, train_args
from tests.mains import run_mains

STEPS = 30


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


def _make_runs(d, data) -> None:
    """One run killed three times, then resumed to the end: by a fault's SIGKILL while writing step 8's checkpoint,
    then (resumed from step 4) by a SIGKILL past step 12, then (resumed again, with no step-interval checkpoints, so
    the checkpoint it leaves is the signal's) by a SIGTERM. Each kill is shown as if run apart: every resume is
    checked against the reference. The killed processes run on their own; every run that ends by itself (the
    reference, the last resume, the non-finite run and its resume) then runs in ONE interpreter (run_mains: one
    start-up instead of four). What the tests read goes to results.json."""
    res = {}
    run, ckpts = d / "killed", d / "killed" / "checkpoints"
    run_args = train_args(run, data, STEPS)
    res["writing"] = vars(run_cli(run_args, env_extra={"MYTHOS_FAULTS": "checkpoint_write@8"}))
    res["latest_after_writing"] = (ckpts / "latest").read_text().strip() if (ckpts / "latest").is_file() else None
    res["tmp8_left"] = (ckpts / "step_0000008.tmp").is_dir() and not (ckpts / "step_0000008").exists()
    proc = _start(run_args)
    _wait_for_step(proc, run, 12)
    proc.send_signal(signal.SIGKILL)
    res["resumed_then_killed"] = proc.communicate()[0]
    res["killed_at"] = max(read_metrics(run))
    res["tmp8_gone"] = not (ckpts / "step_0000008.tmp").exists()
    proc = _start([*run_args, "--checkpoint.interval", "0"])
    _wait_for_step(proc, run, res["killed_at"] + 1)  # a step this process trained
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    res["termed"] = {"returncode": proc.returncode, "stdout": out, "stderr": err, "stopped": max(read_metrics(run)),
                     "latest": (ckpts / "latest").read_text().strip()}
    nonfinite = d / "nonfinite"
    nonfinite_args = train_args(nonfinite, data, 10, "--checkpoint.interval", "2")
    # zipfile's CLI, between the non-finite run and its resume: what that run left (its metrics and `latest`)
    snapshot = ["zipfile", "-c", d / "nonfinite_stopped.zip", nonfinite / "metrics.jsonl",
                nonfinite / "checkpoints" / "latest"]
    names = ["reference_run", "final", "nonfinite", "nonfinite_snapshot", "nonfinite_resume"]
    done = run_mains(train_args(d / "reference", data, STEPS), run_args, nonfinite_args, snapshot, nonfinite_args,
                     env_extra=[{}, {}, {"MYTHOS_FAULTS": "nan_loss@3,nan_loss@5,nan_loss@6,nan_loss@7"}, {}, {}])
    res.update({name: vars(r) for name, r in zip(names, done)})
    assert done[0].returncode == 0 and done[3].returncode == 0, done[0].stderr + done[3].stderr  # reference, snapshot
    (d / "results.json").write_text(json.dumps(res))


@pytest.fixture(scope="session")  # not module: the slow-first order splits the module's tests
def runs(prepared_data, tmp_path_factory, worker_id) -> SimpleNamespace:
    """Every run of this module, made once for all xdist workers: run directories and results.json's outcomes."""
    d = made_once(tmp_path_factory, worker_id, "resume_runs", lambda d: _make_runs(d, prepared_data))
    return SimpleNamespace(dir=d, reference=d / "reference", **json.loads((d / "results.json").read_text()))


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_exact(runs):
    """The SIGKILL past step 12: the next process resumes (and is then stopped by SIGTERM, the last one finishes);
    steps 13 to the end equal the reference's."""
    killed = runs.dir / "killed"
    assert 12 <= runs.killed_at < STEPS
    assert "resumed from" in runs.termed["stdout"], runs.termed["stderr"]
    assert runs.final["returncode"] == 0, runs.final["stderr"]
    assert "resumed from" in runs.final["stdout"]
    ref, resumed = _losses(runs.reference, 13, STEPS), _losses(killed, 13, STEPS)
    assert resumed == ref  # bitwise: floats round-trip exactly through JSON
    assert sorted(read_metrics(killed)) == list(range(1, STEPS + 1))  # no duplicated steps after resume


@pytest.mark.slow
def test_kill_while_writing_checkpoint_keeps_latest(runs):
    assert runs.writing["returncode"] == -signal.SIGKILL, runs.writing["stderr"]
    assert runs.latest_after_writing == "step_0000004"
    assert runs.tmp8_left
    assert "resumed from" in runs.resumed_then_killed and "step_0000004" in runs.resumed_then_killed
    assert runs.tmp8_gone
    assert runs.final["returncode"] == 0, runs.final["stderr"]
    # 5-12 from the second process, then the third and the last
    assert _losses(runs.dir / "killed", 5, STEPS) == _losses(runs.reference, 5, STEPS)


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_for_requeue(runs):
    """The third process (no step-interval checkpoints) stopped by SIGTERM: exit 75 with a checkpoint of the step it
    stopped at, from which the last process resumes bitwise."""
    from mythos.train.signals import EXIT_REQUEUE
    termed, stopped = runs.termed, runs.termed["stopped"]
    assert termed["returncode"] == EXIT_REQUEUE, termed["stderr"]
    assert runs.killed_at < stopped and termed["latest"] == f"step_{stopped:07d}"
    assert f"resumed from {runs.dir / 'killed' / 'checkpoints' / termed['latest']}" in runs.final["stdout"]
    assert runs.final["returncode"] == 0, runs.final["stderr"]
    assert _losses(runs.dir / "killed", stopped + 1, STEPS) == _losses(runs.reference, stopped + 1, STEPS)


def test_checkpoint_keep_prunes_old(runs):
    names = sorted(p.name for p in (runs.reference / "checkpoints").iterdir())
    assert names == ["latest", "step_0000024", "step_0000028", "step_0000030"]


@pytest.mark.slow
def test_nonfinite_steps_skipped_then_stop(runs):
    """One run shows both: a lone non-finite step (3) is skipped and training goes on (step 4 trains and is
    checkpointed, and the streak starts again), then three in a row (5-7) stop it; the stopped run resumes."""
    r = runs.nonfinite
    assert r["returncode"] == 3, r["stderr"]
    assert "step 3: non-finite loss" in r["stderr"]
    last = r["stderr"].strip().splitlines()[-1]
    assert last.startswith("error: training diverged: 3 non-finite steps in a row") and "Traceback" not in r["stderr"]
    assert "stopped at step 7" in last  # the good step 4 ended step 3's streak
    with zipfile.ZipFile(runs.dir / "nonfinite_stopped.zip") as stopped:  # as the stopped run left them
        assert sorted(json.loads(ln)["step"] for ln in stopped.read("metrics.jsonl").decode().splitlines()) == [1, 2, 4]
        assert stopped.read("latest").decode().strip() == "step_0000004"
    resumed = runs.nonfinite_resume
    assert resumed["returncode"] == 0 and "resumed from" in resumed["stdout"], resumed["stderr"]
