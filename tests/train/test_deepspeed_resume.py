"""DeepSpeed runs through the real trainer CLI at 2 ranks (one plain process per rank, as srun starts them):
resume after a kill under ZeRO-2 and after SIGTERM under ZeRO-3 reproduces the uninterrupted losses bit for bit;
a resume at another world size / ZeRO stage is a one-line error; mythos-eval's loader and mythos-export read the run.

All of them are made once (`references`, `one_rank_runs`) and read by the tests. The ZeRO-2 run is killed while
writing its last checkpoint, after every step logged its loss (so those losses are an uninterrupted run's), and
resumed; it is also the run test_deepspeed_integrity damages and test_deepspeed_universal resumes at 1 rank (one
set of options, `_args`). Runs whose processes are not the point share a launch (tests/mains.py).
"""
from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import made_once, read_metrics, train_args
from tests.mains import run_mains, start_mains
from tests.parallel.dist_run import start, wait

STEPS = 8


def _args(run, data, stage, *extra):
    """Checkpoints at 2, 4, 6, 8, all kept (test_deepspeed_integrity falls back through them); one sequence per
    forward, so 1 rank accumulates 4 micro-batches where 2 ranks do 2 each (test_deepspeed_universal)."""
    return train_args(run, data, STEPS, "--parallel.backend", "deepspeed", "--parallel.zero_stage", str(stage),
                      "--checkpoint.interval", "2", "--checkpoint.keep", "4", "--metrics.tensorboard", "false",
                      "--parallel.ac", "loop", "--train.micro_batch", "1", "--train.grad_clip", "0.5", *extra)


def _record(d: Path, rcs: list[int], out: str, **facts) -> None:
    """A run's exit codes (one per rank), rank 0's output and what was seen right after it, for the tests."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "result.json").write_text(json.dumps({"rcs": rcs, **facts}))
    (d / "console.txt").write_text(out)


def _result(d: Path) -> tuple[dict, str]:
    return json.loads((d / "result.json").read_text()), (d / "console.txt").read_text()


def _after_stop(run: Path, into: Path) -> dict:
    """The checkpoint state right after a run stopped (the resume changes it): `latest`, the files of the step
    directories and the metrics logged so far (copied into `into`)."""
    into.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "metrics.jsonl", into)
    ckpts = run / "checkpoints"
    return {"latest": (ckpts / "latest").read_text().strip(),
            "dirs": {p.name: sorted(f.name for f in p.iterdir()) for p in ckpts.iterdir() if p.is_dir()}}


def _sigterm_rank1_once_training(run: Path, launch) -> None:
    """SIGTERM to rank 1 only of `launch` (start_mains), once `run` logged its first step: the ranks agree at the
    step boundary."""
    deadline = time.time() + 900  # a poll with a deadline: past it the test fails, it never signals another run
    while not ((run / "metrics.jsonl").exists() and read_metrics(run)):
        assert all(p.poll() is None for p in launch.procs), [r.stdout[-3000:] for r in launch.wait()]
        if time.time() > deadline:
            for p in launch.procs:
                p.kill()
            raise AssertionError(f"{run} logged no step within 900 s")
        time.sleep(0.05)
    launch.procs[1].send_signal(signal.SIGTERM)


@pytest.fixture(scope="module")
def references(prepared_data, tmp_path_factory, worker_id):
    """{2: the ZeRO-2 run, 3: the uninterrupted ZeRO-3 run}; also the SIGTERMed ZeRO-3 run (DIR/sigterm/run), all
    made once per test run (`made_once`), in 3 launches:
    - the ZeRO-2 run, SIGKILLed while writing its last checkpoint (files written, nothing committed), and at once
      the ZeRO-3 reference (fresh processes), then in the same processes a ZeRO-3 run that gets SIGTERM;
    - both resumes, ZeRO-2 first (fresh processes), then ZeRO-3.
    What each left is recorded in DIR/NAME/ (result.json, console.txt): ref2/killed, ref2 (its resume), ref3,
    sigterm/stopped, sigterm (its resume)."""
    def make(d: Path) -> None:
        zero2, zero3, stopped = d / "ref2" / "run", d / "ref3" / "run", d / "sigterm" / "run"
        killed = start(2, ["-m", *_args(zero2, prepared_data, 2)], {"MYTHOS_FAULTS": f"checkpoint_write@{STEPS}"})
        zero3_then_stopped = start_mains(_args(zero3, prepared_data, 3), _args(stopped, prepared_data, 3), nproc=2,
                                         merge_stderr=True)
        _sigterm_rank1_once_training(stopped, zero3_then_stopped)
        rcs, outs = wait(killed)
        _record(d / "ref2" / "killed", rcs, outs[0], **_after_stop(zero2, d / "ref2" / "killed"))
        ref3, sigterm = zero3_then_stopped.wait()
        assert ref3.rcs == [0, 0], ref3.stdout[-4000:]  # the ZeRO-3 reference
        _record(d / "ref3", ref3.rcs, ref3.stdout)
        _record(d / "sigterm" / "stopped", sigterm.rcs, sigterm.stdout,
                **_after_stop(stopped, d / "sigterm" / "stopped"))
        ref2, resumed = run_mains(_args(zero2, prepared_data, 2), _args(stopped, prepared_data, 3), nproc=2,
                                  merge_stderr=True)
        assert ref2.rcs == [0, 0], ref2.stdout[-4000:]  # the ZeRO-2 reference
        _record(d / "ref2", ref2.rcs, ref2.stdout)
        _record(d / "sigterm", resumed.rcs, resumed.stdout)

    d = made_once(tmp_path_factory, worker_id, "deepspeed_resume_references", make)
    runs = {z: d / f"ref{z}" / "run" for z in (2, 3)}
    for z, run in runs.items():
        ds = json.loads((run / "deepspeed_config.json").read_text())  # generated from ours, beside config.toml
        assert (ds["zero_optimization"]["stage"], ds["gradient_clipping"]) == (z, 0.5), ds
    return runs


@pytest.fixture(scope="module")
def one_rank_runs(references, prepared_data, tmp_path_factory, worker_id) -> Path:
    """The 1-rank runs on copies of the ZeRO-2 run, in one launch (made once): test_deepspeed_universal's resume
    from step 4 through DeepSpeed's universal checkpoint (first: a fresh process), then the resume at ZeRO-3, refused
    (its refusal ends the process through the CLI's own exit). DIR/universal/run and DIR/other_stage/run; each one's
    exit code and output in DIR/NAME/."""
    from tests.parallel.test_checkpoint_reshard import rewind

    def make(d: Path) -> None:
        universal = rewind(references[2], d / "universal" / "run", 4)  # as it was right after checkpoint 4
        other = shutil.copytree(references[2], d / "other_stage" / "run")  # the shared run stays as it was
        for run, r in zip((universal, other), run_mains(_args(universal, prepared_data, 2),
                                                        _args(other, prepared_data, 3, "--train.steps", str(STEPS + 2)),
                                                        merge_stderr=True)):
            _record(run.parent, r.rcs, r.stdout)

    return made_once(tmp_path_factory, worker_id, "deepspeed_one_rank_runs", make)


def _losses(run, first):
    m = read_metrics(run)
    return [m[s]["loss"] for s in range(first, STEPS + 1)]


@pytest.mark.slow
def test_zero2_killed_while_checkpointing_resumes_bitwise(references):
    """`references[2]`, killed while writing checkpoint STEPS: the last committed one stays `latest`, the resume
    starts there, redoes the steps after it bit for bit and removes the half-written directory."""
    run, d = references[2], references[2].parent
    ckpts, last_committed = run / "checkpoints", f"step_{STEPS - 2:07d}"
    killed, killed_out = _result(d / "killed")
    assert killed["rcs"] == [-signal.SIGKILL] * 2, killed_out[-3000:]
    assert killed["latest"] == last_committed
    assert f"step_{STEPS:07d}.tmp" in killed["dirs"] and f"step_{STEPS:07d}" not in killed["dirs"]
    assert f"resumed from {ckpts / last_committed} at step {STEPS - 2}" in _result(d)[1]
    before_kill = {s: rec["loss"] for s, rec in read_metrics(d / "killed").items()}
    assert sorted(before_kill) == list(range(1, STEPS + 1))  # every step ran before the kill: uninterrupted losses
    assert _losses(run, STEPS - 1) == [before_kill[s] for s in range(STEPS - 1, STEPS + 1)]  # bitwise
    assert not (ckpts / f"step_{STEPS:07d}.tmp").exists()


@pytest.mark.slow
def test_zero3_sigterm_saves_on_all_ranks_exits_75_and_resumes_bitwise(references):
    """DIR/sigterm/run: SIGTERM to rank 1 once training; then resumed (see `references`)."""
    from mythos.train.signals import EXIT_REQUEUE
    d = references[3].parent.parent / "sigterm"
    run = d / "run"
    stopped_run, out = _result(d / "stopped")
    assert stopped_run["rcs"] == [EXIT_REQUEUE] * 2, out[-3000:]
    stopped = max(read_metrics(d / "stopped"))
    assert stopped < STEPS
    step_dir = f"step_{stopped:07d}"
    assert stopped_run["latest"] == step_dir
    for r in range(2):  # every rank wrote its ZeRO-3 partition and its RNG state
        assert f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" in stopped_run["dirs"][step_dir]
        assert f"rng_rank{r:05d}.pt" in stopped_run["dirs"][step_dir]
    resumed, out = _result(d)
    assert resumed["rcs"] == [0, 0], out[-4000:]
    assert _losses(run, stopped + 1) == _losses(references[3], stopped + 1)


@pytest.mark.slow
def test_resume_with_other_stage_or_world_size_is_one_line_error(one_rank_runs):
    run = one_rank_runs / "other_stage" / "run"
    result, out = _result(run.parent)
    assert result["rcs"] == [2], out[-3000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("error: ") and "zero_stage 2 -> 3" in last and "world_size 2 -> 1" in last, last
    assert "Traceback" not in out
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step_{STEPS:07d}"


@pytest.mark.slow
def test_eval_and_export_read_deepspeed_runs(references, tmp_path):
    """The weights loaded from a ZeRO-3 run (partitions gathered, MoE bias from the buffers) give the validation
    loss the trainer printed at the end of the run."""
    import torch

    from mythos.config import load_config
    from mythos.checkpoint.load import export, load_any
    from mythos.train.validate import validation_losses
    from mythos.parallel import DistEnv
    run = references[3]
    model, _, _ = load_any(export(run, tmp_path / "m.safetensors"))  # mythos-export; load_run under it
    cfg = load_config(run / "config.toml")
    [(_, loss)] = list(validation_losses(model, cfg, DistEnv(0, 1, 0, torch.device("cpu")), [2]))
    line = next(ln for ln in (run.parent / "console.txt").read_text().splitlines() if ln.startswith("validation"))
    assert f"val/loss_loops_2 {loss:.4f}" in line, (loss, line)


