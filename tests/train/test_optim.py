import math

import pytest
import torch

from mythos.config import TrainConfig
from mythos.train.optim import build_optimizer, build_scheduler, lr_factor


def test_warmup_then_cosine_to_min():
    kw = dict(total=100, warmup=10, schedule="cosine", min_ratio=0.1, decay_fraction=0.2)
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(9, **kw) == pytest.approx(1.0)
    assert lr_factor(10, **kw) == pytest.approx(1.0)
    assert lr_factor(55, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, **kw) == pytest.approx(0.1)
    values = [lr_factor(s, **kw) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay after warmup


def test_wsd_stable_then_linear_decay():
    kw = dict(total=100, warmup=10, schedule="wsd", min_ratio=0.0, decay_fraction=0.2)
    assert [lr_factor(s, **kw) for s in (10, 50, 79)] == [1.0, 1.0, 1.0]
    assert lr_factor(90, **kw) == pytest.approx(0.5)
    assert lr_factor(100, **kw) == pytest.approx(0.0)


def test_decay_groups_and_scheduler():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    cfg = TrainConfig(lr=1.0, warmup_steps=2, steps=10, weight_decay=0.1)
    opt = build_optimizer(model, cfg)
    decay, no_decay = opt.param_groups
    assert [p.ndim for p in decay["params"]] == [2] and decay["weight_decay"] == 0.1
    assert sorted(p.ndim for p in no_decay["params"]) == [1, 1, 1] and no_decay["weight_decay"] == 0.0
    sched = build_scheduler(opt, cfg)
    assert sched.get_last_lr()[0] == pytest.approx(0.5)
    opt.step()
    sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(1.0)
