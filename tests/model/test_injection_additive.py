"""The additive injection (the parity ablation's baseline): u = h + e exactly, no parameters, and a model built
with it runs forward and backward."""
import torch

from mythos.model import Mythos
from mythos.model.injection import Injection
from tests.model.helpers import micro_cfg


def test_additive_is_h_plus_e_without_parameters():
    cfg = micro_cfg("gqa")
    cfg.injection.kind = "additive"
    inj = Injection(cfg.validate())
    assert list(inj.parameters()) == []
    g = torch.Generator().manual_seed(0)
    h, e = torch.randn(2, 3, cfg.dim, generator=g), torch.randn(2, 3, cfg.dim, generator=g)
    assert torch.equal(inj(h, e), h + e) and float(inj.decay().max()) == 1.0


def test_additive_model_trains():
    torch.manual_seed(0)
    cfg = micro_cfg("gqa")
    cfg.injection.kind = "additive"
    model = Mythos(cfg.validate())
    out = model(torch.randint(0, cfg.vocab_size, (2, 9)), n_loops=3)
    assert torch.isfinite(out.logits_BTV).all() and float(out.injection_decay_max) == 1.0
    out.logits_BTV.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
