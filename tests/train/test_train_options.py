"""Trainer options that change how a step is computed: accumulation, bf16 autocast, wall-time checkpoints."""
import math

import pytest

from tests.conftest import made_once, read_metrics, train_args
from tests.mains import run_mains


@pytest.fixture(scope="module")
def option_runs(prepared_data, tmp_path_factory, worker_id):
    """{name: run dir}, the three runs in one interpreter (run_mains: one start-up, not three). micro1/micro4: 3
    steps of the same global batch of 4 as 4 micro-batches of 1 and as one of 4, no step-interval or final
    checkpoints; micro4 also checkpoints on a wall-time interval shorter than a step, for test_wall_time_checkpoints
    (saving does not change what is computed). bf16: 8 steps under bf16 autocast."""
    timed = ["--checkpoint.interval_minutes", "0.00001", "--checkpoint.keep", "10"]

    def make(d):
        runs = [train_args(d / f"micro{micro}", prepared_data, 3, "--train.micro_batch", str(micro),
                           "--checkpoint.interval", "0", "--checkpoint.final", "false", *extra)
                for micro, extra in ((1, []), (4, timed))]
        runs.append(train_args(d / "bf16", prepared_data, 8, "--train.dtype", "bf16", "--checkpoint.interval", "0"))
        for r in run_mains(*runs):
            assert r.returncode == 0, r.stderr

    d = made_once(tmp_path_factory, worker_id, "train_option_runs", make)
    return {name: d / name for name in ("micro1", "micro4", "bf16")}


@pytest.mark.slow
def test_gradient_accumulation_matches_one_big_micro_batch(option_runs):
    losses = {micro: [m["loss"] for m in read_metrics(option_runs[f"micro{micro}"]).values()] for micro in (1, 4)}
    assert losses[1][0] == losses[4][0] or abs(losses[1][0] - losses[4][0]) < 1e-5
    for a, b in zip(losses[1], losses[4]):
        assert abs(a - b) < 1e-4, losses


@pytest.mark.slow
def test_bf16_autocast_trains(option_runs):
    losses = [m["loss"] for m in read_metrics(option_runs["bf16"]).values()]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


@pytest.mark.slow
def test_wall_time_checkpoints(option_runs):
    """No step-interval or final checkpoint: every checkpoint comes from the wall-time interval."""
    names = sorted(p.name for p in (option_runs["micro4"] / "checkpoints").iterdir())
    assert names == ["latest", "step_0000001", "step_0000002", "step_0000003"]
