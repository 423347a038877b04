"""Per-rank step times and straggler warnings: the judgement on its own, and a 2-rank run with `slow_rank@1:3`
whose log names rank 1 and whose metrics.jsonl holds every rank's time."""
from __future__ import annotations

import pytest
import torch

from mythos.train.stragglers import StragglerMonitor
from tests.conftest import read_metrics, train_args
from tests.parallel.dist_run import start, wait


def test_judge_warns_once_per_streak_naming_the_rank():
    warned = []
    mon = StragglerMonitor(4, 0, 10, 1.5, 2, torch.device("cpu"), warn=warned.append)
    slow = [1.0, 1.0, 3.0, 1.1]
    rec = mon.judge(10, slow)
    assert rec == {"step_time_median_s": 1.05, "step_time_max_s": 3.0, "slowest_rank": 2, "step_time_rank_s": slow}
    assert not warned  # one interval is not yet a streak
    mon.judge(20, slow)
    mon.judge(30, slow)
    assert len(warned) == 1 and warned[0].startswith("straggler: rank 2 step time 3.000 s is 2.86x the median")
    mon.judge(40, [1.0] * 4)  # back to normal: the streak ends
    mon.judge(50, slow)
    mon.judge(60, slow)
    assert len(warned) == 2


def test_off_in_one_process():
    mon = StragglerMonitor(1, 0, 1, 1.5, 1, torch.device("cpu"))
    mon.on_step_start(1)
    assert mon.on_step_end(1, 0.5) == {}


@pytest.mark.slow
def test_slow_rank_is_named_and_per_rank_times_are_recorded(prepared_data, tmp_path):
    run = tmp_path / "run"
    args = train_args(run, prepared_data, 4, "--train.log_interval", "1", "--metrics.straggler_factor", "1.2",
                      "--metrics.straggler_intervals", "2", "--checkpoint.interval", "0")
    rcs, outs = wait(start(2, ["-m", *args], env_extra={"MYTHOS_FAULTS": "slow_rank@1:3"}), timeout=900)
    assert rcs == [0, 0], outs[0][-3000:]
    assert "warning: straggler: rank 1 step time" in outs[0], outs[0][-3000:]
    assert "straggler: rank 0" not in outs[0]
    m = read_metrics(run)
    for step in range(1, 5):
        times = m[step]["step_time_rank_s"]
        assert len(times) == 2 and m[step]["slowest_rank"] == 1 and times[1] > 2 * times[0], m[step]
        assert m[step]["step_time_max_s"] == times[1] and m[step]["step_time_median_s"] == sum(times) / 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    assert {"train/step_time_median_s", "train/step_time_max_s", "train/slowest_rank"} <= set(acc.Tags()["scalars"])
