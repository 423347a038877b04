"""DeepSpeed runs through the real trainer CLI at 2 ranks (one plain process per rank, as srun starts them):
resume after a kill under ZeRO-2 and after SIGTERM under ZeRO-3 reproduces the uninterrupted losses bit for bit;
a resume at another world size / ZeRO stage is a one-line error; mythos-eval's loader and mythos-export read the run.

The ZeRO-2 run (`references`: killed while writing its last checkpoint, then resumed, so one launch pair is both
the killed run and the uninterrupted reference) is also the one test_deepspeed_integrity damages and
test_deepspeed_universal resumes at 1 rank: one set of options (`_args`) serves all three, so it is made once.
"""
from __future__ import annotations

import json
import shutil
import signal
import sys
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


SEGMENT_END = "==== trainer run exited"


def start_in_one_launch(runs: list[list[str]], env_extra=None):
    """2 ranks that run the trainer CLI once per argument list, one after another in the same processes (the
    import and process-group start-up paid once per launch, not per run). Every run but the last ends its output
    with a `SEGMENT_END rc` line; the last runs as `python -m mythos.train.cli` would, its own exit included."""
    args = [a for cli_args in runs for a in ("--then", *cli_args[1:])]  # cli_args[0]: "mythos.train.cli"
    return start(2, ["-m", "tests.train.test_deepspeed_resume", *args[1:]], env_extra)


def segments(out: str) -> list[tuple[str, int | None]]:
    """(output, exit code) of each run of a start_in_one_launch rank, the last one's code None (the process's)."""
    parts, text = [], []
    for line in out.splitlines(keepends=True):
        if line.startswith(SEGMENT_END):
            parts.append(("".join(text), int(line.split()[-1])))
            text = []
        else:
            text.append(line)
    return [*parts, ("".join(text), None)]


def _run_in_one_process(argv: list[str]) -> None:
    """Child side of start_in_one_launch: the process group stays up between runs (DistEnv.shutdown and the
    os._exit of multi-rank runs are no-ops until the last run), like tests/parallel/conftest.py's launch_configs."""
    import mythos.errors
    from mythos.parallel import DistEnv
    from mythos.train import cli
    runs: list[list[str]] = [[]]
    for a in argv:
        if a == "--then":
            runs.append([])
        else:
            runs[-1].append(a)
    shutdown, exit_ = DistEnv.shutdown, mythos.errors.exit_after_distributed
    DistEnv.shutdown, mythos.errors.exit_after_distributed = lambda self: None, lambda code: None
    for args in runs[:-1]:
        try:
            rc = cli.main(args)
        except SystemExit as e:  # a UserError: `error: ...` printed, exit code 2
            rc = e.code
        print(f"{SEGMENT_END} {rc}", flush=True)
    DistEnv.shutdown, mythos.errors.exit_after_distributed = shutdown, exit_
    sys.exit(cli.main(runs[-1]))


def _run_ok(args, **kw):
    rcs, outs = wait(_start(args, **kw))
    assert rcs == [0, 0], outs[0][-4000:]
    return outs[0]


def _losses(run, first):
    m = read_metrics(run)
    return [m[s]["loss"] for s in range(first, STEPS + 1)]


@pytest.fixture(scope="module")
def references(prepared_data, tmp_path_factory, worker_id):
    """The ZeRO-2 and ZeRO-3 runs, made once per test run (`made_once`). The ZeRO-3 run is uninterrupted. The
    ZeRO-2 run is also the killed one: it trains all STEPS steps, is SIGKILLed while writing its last checkpoint
    (files written, nothing committed) and is resumed, so the losses it logged before the kill are an uninterrupted
    run's (kept in before_kill/metrics.jsonl beside the run) and its directory ends as a complete run's;
    test_zero2_killed_while_checkpointing_resumes_bitwise checks the kill and the resume from what `make` recorded
    between them (killed.json, console_killed.txt, console.txt). The resume and the ZeRO-3 run share one launch."""
    def make(d: Path) -> None:
        zero2, zero3 = d / "ref2" / "run", d / "ref3" / "run"
        kill_at_last = {"MYTHOS_FAULTS": f"checkpoint_write@{STEPS}"}
        rcs, outs = wait(_start(_args(zero2, prepared_data, 2), env_extra=kill_at_last))
        ckpts = zero2 / "checkpoints"
        last = ckpts / f"step_{STEPS:07d}"
        (d / "ref2" / "killed.json").write_text(json.dumps({
            "rcs": rcs, "latest": (ckpts / "latest").read_text().strip(),
            "tmp_is_dir": last.with_name(f"{last.name}.tmp").is_dir(), "committed": last.exists()}))
        (d / "ref2" / "console_killed.txt").write_text(outs[0])
        (d / "ref2" / "before_kill").mkdir()
        shutil.copy(zero2 / "metrics.jsonl", d / "ref2" / "before_kill")
        # the resume first (in fresh processes, as a resume after a kill is), then the ZeRO-3 run in the same ones
        rcs, outs = wait(start_in_one_launch([_args(zero2, prepared_data, 2), _args(zero3, prepared_data, 3)]))
        (resumed, _), (uninterrupted, _) = segments(outs[0])
        assert rcs == [0, 0] and [segments(out)[0][1] for out in outs] == [0, 0], outs[0][-4000:]
        (zero2.parent / "console.txt").write_text(resumed)
        (zero3.parent / "console.txt").write_text(uninterrupted)

    d = made_once(tmp_path_factory, worker_id, "deepspeed_resume_references", make)
    runs = {z: d / f"ref{z}" / "run" for z in (2, 3)}
    for z, run in runs.items():
        ds = json.loads((run / "deepspeed_config.json").read_text())  # generated from ours, beside config.toml
        assert (ds["zero_optimization"]["stage"], ds["gradient_clipping"]) == (z, 0.5), ds
    return runs


@pytest.mark.slow
def test_zero2_killed_while_checkpointing_resumes_bitwise(references):
    """`references[2]`, killed while writing checkpoint STEPS: the last committed one stays `latest`, the resume
    starts there, redoes the steps after it bit for bit and removes the half-written directory."""
    d, ckpts = references[2].parent, references[2] / "checkpoints"
    killed = json.loads((d / "killed.json").read_text())
    assert killed["rcs"] == [-signal.SIGKILL] * 2, (d / "console_killed.txt").read_text()[-3000:]
    assert killed["latest"] == f"step_{STEPS - 2:07d}"
    assert killed["tmp_is_dir"] and not killed["committed"]
    assert f"resumed from {ckpts / f'step_{STEPS - 2:07d}'} at step {STEPS - 2}" in (d / "console.txt").read_text()
    before_kill = {s: rec["loss"] for s, rec in read_metrics(d / "before_kill").items()}
    assert sorted(before_kill) == list(range(1, STEPS + 1))  # every step ran before the kill: uninterrupted losses
    assert _losses(references[2], STEPS - 1) == [before_kill[s] for s in range(STEPS - 1, STEPS + 1)]  # bitwise
    assert not (ckpts / f"step_{STEPS:07d}.tmp").exists()


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


if __name__ == "__main__":
    _run_in_one_process(sys.argv[1:])
