"""parallel.backend / zero_stage / offload / deepspeed_config: validation and the generated DeepSpeed config."""
from __future__ import annotations

import json

import pytest

from mythos.config import build_config
from mythos.errors import UserError
from mythos.train.engine import micro_batches
from mythos.train.engine_deepspeed import resolve_config


def _cfg(**overrides):
    return build_config({}, {k: str(v) for k, v in overrides.items()})


@pytest.mark.parametrize("overrides, key", [
    ({"parallel.backend": "megatron"}, "parallel.backend"),
    ({"parallel.backend": "deepspeed", "parallel.zero_stage": 4}, "parallel.zero_stage"),
    ({"parallel.backend": "deepspeed", "parallel.offload_optimizer": "nvme"}, "parallel.offload_optimizer"),
    ({"parallel.backend": "deepspeed", "parallel.offload_params": "cpu"}, "parallel.offload_params"),
    ({"parallel.backend": "deepspeed", "parallel.ep": 2}, "parallel.ep"),
])
def test_bad_parallel_settings_name_the_key(overrides, key):
    with pytest.raises(UserError, match=f"'{key}'") as e:
        _cfg(**overrides)
    assert "\n" not in str(e.value)


def test_expert_parallel_with_deepspeed_says_why():
    with pytest.raises(UserError, match='deepspeed.*not supported.*use parallel.backend = "fsdp"'):
        _cfg(**{"parallel.backend": "deepspeed", "parallel.ep": 2})


def test_generated_config_follows_ours():
    cfg = _cfg(**{"parallel.backend": "deepspeed", "parallel.zero_stage": 3, "train.grad_clip": 0.5,
                  "train.global_batch": 16, "train.micro_batch": 2, "train.dtype": "bf16",
                  "parallel.offload_optimizer": "cpu", "parallel.offload_params": "cpu"})
    ds = resolve_config(cfg, world_size=2, n_micro=micro_batches(cfg, 2))
    assert ds["gradient_clipping"] == 0.5  # never DeepSpeed's default 1.0
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == \
        (16, 2, 4)
    assert ds["zero_optimization"] == {"stage": 3, "offload_optimizer": {"device": "cpu"},
                                       "offload_param": {"device": "cpu"}}
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert "optimizer" not in ds and "scheduler" not in ds  # ours: the client optimizer and our schedule
    assert _cfg(**{"parallel.backend": "deepspeed", "train.grad_clip": 0.0}) and resolve_config(
        _cfg(**{"parallel.backend": "deepspeed", "train.grad_clip": 0.0}), 1, 8)["gradient_clipping"] == 0.0


def test_user_json_merges_over_ours(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"reduce_bucket_size": 1000}, "gradient_clipping": 2.0}))
    cfg = _cfg(**{"parallel.backend": "deepspeed", "parallel.zero_stage": 1, "parallel.deepspeed_config": path})
    ds = resolve_config(cfg, world_size=1, n_micro=1)
    assert ds["zero_optimization"] == {"stage": 1, "reduce_bucket_size": 1000}
    assert ds["gradient_clipping"] == 2.0


@pytest.mark.parametrize("text, match", [
    ('{"optimizer": {"type": "Adam"}}', "key 'optimizer' is set from the mythos config"),
    ('{"train_batch_size": 64}', "key 'train_batch_size' is set from the mythos config .train.global_batch"),
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
])
def test_bad_user_json_is_one_line_error_naming_the_file(tmp_path, text, match):
    path = tmp_path / "ds.json"
    path.write_text(text)
    cfg = _cfg(**{"parallel.backend": "deepspeed", "parallel.deepspeed_config": path})
    with pytest.raises(UserError, match=match) as e:
        resolve_config(cfg, world_size=1, n_micro=1)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_missing_user_json(tmp_path):
    cfg = _cfg(**{"parallel.backend": "deepspeed", "parallel.deepspeed_config": tmp_path / "nope.json"})
    with pytest.raises(UserError, match="nope.json: cannot read the DeepSpeed config"):
        resolve_config(cfg, world_size=1, n_micro=1)


def test_resume_across_backends_is_one_line_error(tmp_path):
    """The check CheckpointManager runs on a candidate's trainer state before reading its payload (2 ranks:
    tests/train/test_deepspeed_resume.py)."""
    import torch

    from mythos.parallel import DistEnv
    from mythos.train.engine import FSDPEngine
    from mythos.train.engine_deepspeed import DeepSpeedEngine
    ds = object.__new__(DeepSpeedEngine)
    ds.cfg, ds.env = _cfg(**{"parallel.backend": "deepspeed", "parallel.zero_stage": 3}), DistEnv(0, 1, 0,
                                                                                               torch.device("cpu"))
    fsdp = object.__new__(FSDPEngine)
    saved = {"step": 4}  # written by the FSDP engine
    with pytest.raises(UserError, match='backend fsdp -> deepspeed.*resume with parallel.backend = "fsdp"$'):
        ds.check_resume(tmp_path, saved)
    fsdp.check_resume(tmp_path, saved)  # fine
    saved = {"engine": {"backend": "deepspeed", "zero_stage": 3, "world_size": 1}}
    ds.check_resume(tmp_path, saved)  # same stage and world: fine
    with pytest.raises(UserError, match='by the deepspeed engine; resume it with parallel.backend = "deepspeed"'):
        fsdp.check_resume(tmp_path, saved)
