"""DeepSpeed runs through the real trainer CLI at 2 ranks (one plain process per rank, as srun starts them):
resume after a kill under ZeRO-2 and after SIGTERM under ZeRO-3 reproduces the uninterrupted losses bit for bit;
a resume at another world size / ZeRO stage is a one-line error; mythos-eval's loader and mythos-export read the run.

The uninterrupted ZeRO-2 run (`references`) is also the one test_deepspeed_integrity damages and
test_deepspeed_universal resumes at 1 rank: one set of options (`_args`) serves all three, so it is made once.
"""
from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import made_once, read_metrics, run_cli, train_args
from tests.parallel.dist_run import start, wait

STEPS = 8


def _args(run, data, stage, *extra):
    """Checkpoints at 2, 4, 6, 8, all kept (test_deepspeed_integrity falls back through them); one sequence per
    forward, so 1 rank accumulates 4 micro-batches where 2 ranks do 2 each (test_deepspeed_universal)."""
    return train_args(run, data, STEPS, "--parallel.backend", "deepspeed", "--parallel.zero_stage", str(stage),
                      "--checkpoint.interval", "2", "--checkpoint.keep", "4", "--metrics.tensorboard", "false",
                      "--parallel.ac", "loop", "--train.micro_batch", "1", "--train.grad_clip", "0.5", *extra)


def _start(args, env_extra=None):
    return start(2, ["-m", *args], env_extra)


def _run_ok(args, **kw):
    rcs, outs = wait(_start(args, **kw))
    assert rcs == [0, 0], outs[0][-4000:]
    return outs[0]


def _losses(run, first):
    m = read_metrics(run)
    return [m[s]["loss"] for s in range(first, STEPS + 1)]


@pytest.fixture(scope="module")
def references(prepared_data, tmp_path_factory, worker_id):
    """Uninterrupted ZeRO-2 and ZeRO-3 runs, both started at once (their ranks share the cores); made once per test
    run (`made_once`)."""
    def make(d: Path) -> None:
        procs = {z: _start(_args(d / f"ref{z}" / "run", prepared_data, z)) for z in (2, 3)}
        for z, ps in procs.items():
            rcs, outs = wait(ps)
            assert rcs == [0, 0], outs[0][-4000:]
            (d / f"ref{z}" / "console.txt").write_text(outs[0])

    d = made_once(tmp_path_factory, worker_id, "deepspeed_resume_references", make)
    runs = {z: d / f"ref{z}" / "run" for z in (2, 3)}
    for z, run in runs.items():
        ds = json.loads((run / "deepspeed_config.json").read_text())  # generated from ours, beside config.toml
        assert (ds["zero_optimization"]["stage"], ds["gradient_clipping"]) == (z, 0.5), ds
    return runs


@pytest.mark.slow
def test_zero2_killed_while_checkpointing_resumes_bitwise(references, prepared_data, tmp_path):
    run = tmp_path / "run"
    rcs, outs = wait(_start(_args(run, prepared_data, 2), env_extra={"MYTHOS_FAULTS": "checkpoint_write@4"}))
    assert rcs == [-signal.SIGKILL] * 2, outs[0][-3000:]
    ckpts = run / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step_0000002"
    assert (ckpts / "step_0000004.tmp").is_dir() and not (ckpts / "step_0000004").exists()
    out = _run_ok(_args(run, prepared_data, 2))
    assert f"resumed from {ckpts / 'step_0000002'} at step 2" in out
    assert _losses(run, 3) == _losses(references[2], 3)  # bitwise
    assert not (ckpts / "step_0000004.tmp").exists()


@pytest.mark.slow
def test_zero3_sigterm_saves_on_all_ranks_exits_75_and_resumes_bitwise(references, prepared_data, tmp_path):
    from mythos.train.signals import EXIT_REQUEUE
    run = tmp_path / "run"
    procs = _start(_args(run, prepared_data, 3))
    deadline = time.time() + 300
    while not ((run / "metrics.jsonl").exists() and read_metrics(run)) and time.time() < deadline:
        assert all(p.poll() is None for p in procs), wait(procs)[1][0][-3000:]
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)  # one rank only: the ranks agree at the step boundary
    rcs, outs = wait(procs)
    assert rcs == [EXIT_REQUEUE] * 2, outs[0][-3000:]
    stopped = max(read_metrics(run))
    assert stopped < STEPS
    step_dir = run / "checkpoints" / f"step_{stopped:07d}"
    assert (run / "checkpoints" / "latest").read_text().strip() == step_dir.name
    for r in range(2):  # every rank wrote its ZeRO-3 partition and its RNG state
        assert (step_dir / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt").is_file()
        assert (step_dir / f"rng_rank{r:05d}.pt").is_file()
    _run_ok(_args(run, prepared_data, 3))
    assert _losses(run, stopped + 1) == _losses(references[3], stopped + 1)


@pytest.mark.slow
def test_resume_with_other_stage_or_world_size_is_one_line_error(references, prepared_data, tmp_path):
    run = shutil.copytree(references[2], tmp_path / "run")  # the shared run stays as it was for the other tests
    r = run_cli(_args(run, prepared_data, 3, "--train.steps", str(STEPS + 2)))
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "zero_stage 2 -> 3" in last and "world_size 2 -> 1" in last, last
    assert "Traceback" not in r.stderr
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
