"""A DeepSpeed ZeRO-2 run saved at 2 ranks resumes in one process through DeepSpeed's universal checkpoint
(`ds_to_universal`, then `checkpoint.load_universal`): the same data position, and the next losses within 1e-5 of
continuing at 2 ranks. DeepSpeed with our expert parallelism is refused in one line that says why and what to use.

The 2-rank run is test_deepspeed_resume's ZeRO-2 run (made once; one sequence per forward); the 1-rank resume is
made there too (`one_rank_runs`: it shares its process with test_deepspeed_resume's other 1-rank run)."""
from __future__ import annotations

import json

import pytest

from tests.conftest import read_metrics, run_cli
from tests.train.test_deepspeed_resume import STEPS, _result, one_rank_runs, references  # noqa: F401 (fixtures)


def _data_state(run, step):
    return json.loads((run / "checkpoints" / f"step_{step:07d}" / "trainer_state.json").read_text())["data"]


@pytest.mark.slow
def test_zero2_saved_at_2_resumes_at_1_through_universal_checkpoint(references, one_rank_runs):
    two = references[2]
    one = one_rank_runs / "universal" / "run"  # the 2-rank run as it was right after its step-4 checkpoint, resumed
    result, out = _result(one.parent)
    assert result["rcs"] == [0], out[-4000:]
    assert f"resumed from {one / 'checkpoints' / 'step_0000004'} at step 4" in out
    want, got = read_metrics(two), read_metrics(one)
    for step in range(5, STEPS + 1):
        assert abs(got[step]["loss"] - want[step]["loss"]) <= 1e-5, (step, got[step], want[step])
        assert got[step]["world_size"] == 1 and want[step]["world_size"] == 2
    assert _data_state(one, STEPS) == _data_state(two, STEPS)  # same global data position
    assert _data_state(one, STEPS)["samples_consumed"] == STEPS * 4
    assert json.loads((one / "deepspeed_config.json").read_text())["checkpoint"] == {"load_universal": True}
    assert not list((one / "checkpoints").glob("*universal*"))  # the converted copy is removed after loading


def test_deepspeed_with_expert_parallelism_is_refused_in_one_line(tmp_path):
    from mythos.config import build_config
    from mythos.errors import UserError
    with pytest.raises(UserError) as e:
        build_config({}, {"parallel.backend": "deepspeed", "parallel.ep": "2"})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("config key 'parallel.ep': 2 with parallel.backend = \"deepspeed\"")
    assert "parallel.backend = \"fsdp\"" in msg and "ep = 1" in msg  # what to use instead
    cfg = tmp_path / "c.toml"
    cfg.write_text("[parallel]\nbackend = \"deepspeed\"\nep = 2\n")
    r = run_cli(["mythos.train.cli", "--config", str(cfg)])
    assert r.returncode == 2 and r.stderr == f"error: {msg}\n", r.stderr


def test_universal_only_for_zero_1_2_at_another_world_size(tmp_path):
    """The engine's decision (before deepspeed.initialize) and its resume check."""
    import torch

    from mythos.config import build_config
    from mythos.errors import UserError
    from mythos.parallel import DistEnv
    from mythos.checkpoint.deepspeed_universal import resumes_at_new_world, with_universal
    from mythos.train.engine_deepspeed import DeepSpeedEngine
    step = tmp_path / "checkpoints" / "step_0000004"
    step.mkdir(parents=True)
    (tmp_path / "checkpoints" / "latest").write_text("step_0000004\n")
    saved = {"backend": "deepspeed", "zero_stage": 2, "world_size": 2}
    (step / "trainer_state.json").write_text(json.dumps({"step": 4, "engine": saved}))
    assert resumes_at_new_world(tmp_path, "deepspeed", 2, 1)
    assert not resumes_at_new_world(tmp_path, "deepspeed", 2, 2)  # same world: DeepSpeed's own files
    assert not resumes_at_new_world(tmp_path, "deepspeed", 3, 1)  # another stage: refused by check_resume
    assert not resumes_at_new_world(tmp_path / "none", "deepspeed", 2, 1)
    assert with_universal({"a": 1}, True) == {"a": 1, "checkpoint": {"load_universal": True}}
    ds = object.__new__(DeepSpeedEngine)
    ds.cfg = build_config({}, {"parallel.backend": "deepspeed", "parallel.zero_stage": "2"})
    ds.env = DistEnv(0, 1, 0, torch.device("cpu"))
    with pytest.raises(UserError, match=r"world_size 2 -> 1: .*at another world size only under ZeRO 1/2"):
        ds.check_resume(step, {"engine": saved})
    ds.universal = True
    ds.check_resume(step, {"engine": saved})
