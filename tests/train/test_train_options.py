"""Trainer options that change how a step is computed: accumulation, bf16 autocast, wall-time checkpoints."""
import math

import pytest

from tests.conftest import read_metrics, run_cli, train_args


@pytest.mark.slow
def test_gradient_accumulation_matches_one_big_micro_batch(prepared_data, tmp_path):
    losses = {}
    for micro in (1, 4):
        run = tmp_path / f"micro{micro}"
        r = run_cli(train_args(run, prepared_data, 3, "--train.micro_batch", str(micro), "--checkpoint.interval", "0",
                               "--checkpoint.final", "false"))
        assert r.returncode == 0, r.stderr
        losses[micro] = [m["loss"] for m in read_metrics(run).values()]
    assert losses[1][0] == losses[4][0] or abs(losses[1][0] - losses[4][0]) < 1e-5
    for a, b in zip(losses[1], losses[4]):
        assert abs(a - b) < 1e-4, losses


@pytest.mark.slow
def test_bf16_autocast_trains(prepared_data, tmp_path):
    run = tmp_path / "bf16"
    r = run_cli(train_args(run, prepared_data, 8, "--train.dtype", "bf16", "--checkpoint.interval", "0"))
    assert r.returncode == 0, r.stderr
    losses = [m["loss"] for m in read_metrics(run).values()]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def test_wall_time_checkpoints(prepared_data, tmp_path):
    run = tmp_path / "timed"
    r = run_cli(train_args(run, prepared_data, 3, "--checkpoint.interval", "0", "--checkpoint.final", "false",
                           "--checkpoint.interval_minutes", "0.00001", "--checkpoint.keep", "10"))
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["latest", "step_0000001", "step_0000002", "step_0000003"]
