"""The tiny model (RDT and dense) overfits one fixed batch: loss falls >= 80% within 200 CPU steps."""
import pytest
import torch
import torch.nn.functional as F

from mythos.model import LoopSampler, ModelConfig, Mythos


@pytest.mark.parametrize("mode", ["rdt", "dense"])
def test_tiny_overfits_one_batch(mode):
    torch.manual_seed(0)
    cfg = ModelConfig.named("tiny")
    if mode == "dense":
        cfg = cfg.replace(mode="dense", n_layers=4)
    model = Mythos(cfg)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, cfg.vocab_size, (4, 65), generator=g)
    x, y = data[:, :-1], data[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    sampler = LoopSampler(cfg.loops)
    first = None
    for step in range(200):
        out = model(x, n_loops=sampler.sample(g) if mode == "rdt" else None)
        loss = F.cross_entropy(out.logits_BTV.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        (loss + out.aux_loss).backward()
        opt.step()
        for moe in model.moe_modules():
            moe.update_bias(moe.tokens_per_expert.clone())
        first = loss.item() if first is None else first
        if loss.item() <= 0.2 * first:
            break
    assert loss.item() <= 0.2 * first, (step, first, loss.item())
    assert torch.isfinite(torch.stack([p.detach().abs().sum() for p in model.parameters()])).all()
