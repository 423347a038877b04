"""Parcae injection: a = exp(-softplus(dt)·exp(A_log)) stays in (0, 1) and finite for any parameter values."""
import pytest
import torch

from mythos.model import ModelConfig
from mythos.model.injection import Injection


def _values(d):
    g = torch.Generator().manual_seed(0)
    out = {"zero": torch.zeros(d), "random": torch.randn(d, generator=g) * 10}
    for v in (1e4, -1e4):
        out[f"{v:+g}"] = torch.full((d,), v)
    return out


@pytest.mark.parametrize("kind", ["parcae", "openmythos"])
@pytest.mark.parametrize("dt_name", ["zero", "random", "+10000", "-10000"])
@pytest.mark.parametrize("alog_name", ["zero", "random", "+10000", "-10000"])
def test_decay_in_open_unit_interval_and_grads_finite(kind, dt_name, alog_name):
    cfg = ModelConfig.named("tiny")
    cfg.injection.kind = kind
    inj = Injection(cfg)
    d = cfg.dim
    vals = _values(d)
    with torch.no_grad():
        inj.dt.copy_(vals[dt_name][: inj.dt.numel()])
        inj.A_log.copy_(vals[alog_name])
    a = inj.decay()
    assert torch.isfinite(a).all()
    assert (a > 0).all() and (a < 1).all(), (a.min().item(), a.max().item())
    g = torch.Generator().manual_seed(1)
    h, e = torch.randn(2, 3, d, generator=g), torch.randn(2, 3, d, generator=g)
    u = inj(h, e)
    assert torch.isfinite(u).all()
    (u.square().sum() + a.sum()).backward()
    for name, p in inj.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_parcae_init_is_identity_B_and_a_init():
    cfg = ModelConfig.named("tiny")
    inj = Injection(cfg)
    assert torch.equal(inj.B, torch.eye(cfg.dim))
    assert inj.dt.shape == (cfg.dim,), "per-channel dt"
    torch.testing.assert_close(inj.decay(), torch.full((cfg.dim,), cfg.injection.a_init), rtol=1e-5, atol=1e-6)
    h, e = torch.zeros(1, 2, cfg.dim), torch.randn(1, 2, cfg.dim)
    torch.testing.assert_close(inj(h, e), cfg.injection.dt_init * e, rtol=1e-5, atol=1e-6)
