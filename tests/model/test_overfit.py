"""The tiny model (RDT and dense) overfits one fixed batch through the trainer's train step: loss falls >= 80%
within 200 CPU steps."""
import pytest
import torch

from mythos.config import Config, ParallelConfig, TrainConfig
from mythos.model import LoopSampler, ModelConfig, Mythos
from mythos.parallel import DistEnv
from mythos.train.engines import build_engine
from mythos.train.trainer import loops_for_step


@pytest.mark.parametrize("mode", ["rdt", "dense"])
def test_tiny_overfits_one_batch(mode, tmp_path):
    torch.manual_seed(0)
    cfg = Config()
    cfg.model = ModelConfig.named("tiny")
    if mode == "dense":
        cfg.model = cfg.model.replace(mode="dense", n_layers=4)
    cfg.train = TrainConfig(steps=200, lr=3e-3, weight_decay=0.0, grad_clip=0.0, warmup_steps=0, schedule="wsd",
                            decay_fraction=0.0, global_batch=4, micro_batch=4, seq_len=64, device="cpu")
    cfg.parallel = ParallelConfig(ac="none")
    engine = build_engine(Mythos(cfg.model), cfg, DistEnv(0, 1, 0, torch.device("cpu")), tmp_path)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, cfg.model.vocab_size, (4, 65), generator=g)
    sampler = LoopSampler(cfg.model.loops) if mode == "rdt" else None
    first = None
    for step in range(200):
        r = engine.train_step(data[:, :-1], data[:, 1:], loops_for_step(sampler, 0, step) if sampler else None)
        first = r.loss if first is None else first
        if r.loss <= 0.2 * first:
            break
    assert r.loss <= 0.2 * first, (step, first, r.loss)
    assert torch.isfinite(torch.stack([p.detach().abs().sum() for p in engine.model.parameters()])).all()
