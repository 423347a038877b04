from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import read_metrics, run_cli, train_args

EXPECTED = ["train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/loops", "train/mfu",
            "train/ponder", "model/injection_decay_max", "model/ponder", "model/hidden_norm/loop_00",
            "moe/load_max_over_mean/loop_00", "sys/memory_mb", "val/loss_loops_2", "val/loss_loops_4"]


def test_metrics_and_tensorboard_tags(prepared_data, tmp_path):
    run = tmp_path / "run"
    r = run_cli(train_args(run, prepared_data, 6))
    assert r.returncode == 0, r.stderr
    m = read_metrics(run)
    assert sorted(m) == [1, 2, 3, 4, 5, 6]
    for rec in m.values():
        assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "loops"} <= set(rec)
        assert isinstance(rec["loss"], float) and rec["tokens_per_s"] > 0 and 1 <= rec["loops"] <= 4
    assert "ETA" in r.stdout and "tok/s" in r.stdout and "MFU" in r.stdout
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    missing = [t for t in EXPECTED if t not in tags]
    assert not missing, f"missing tags {missing}; have {sorted(tags)}"
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert acc.Scalars("train/loss")[-1].value == pytest_approx(m[6]["loss"])


def pytest_approx(x):
    import pytest
    return pytest.approx(x, rel=1e-6)
