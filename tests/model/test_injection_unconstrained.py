"""The unconstrained injection (the stability experiment's control): the same map as parcae at init, and nothing
bounds A afterwards."""
import torch

from mythos.model import Mythos
from tests.model.helpers import micro_cfg


def _model(kind: str):
    torch.manual_seed(0)
    cfg = micro_cfg("gqa")
    cfg.injection.kind, cfg.injection.dt_init = kind, 1.0
    return Mythos(cfg.validate()).eval(), cfg


def test_unconstrained_equals_parcae_at_init():
    parcae, cfg = _model("parcae")
    free, _ = _model("unconstrained")
    x = torch.randint(0, cfg.vocab_size, (2, 9))
    with torch.no_grad():
        a, b = parcae(x, n_loops=4).logits_BTV, free(x, n_loops=4).logits_BTV
    assert (a - b).abs().max().item() <= 1e-5


def test_unconstrained_a_is_not_bounded():
    free, cfg = _model("unconstrained")
    with torch.no_grad():
        free.recurrence.injection.A.copy_(3.0 * torch.eye(cfg.dim))
        out = free(torch.randint(0, cfg.vocab_size, (2, 9)), n_loops=6)
    assert float(out.injection_decay_max) > 2.9  # reported bound: ||A||_2, free to exceed 1
    norms = out.hidden_norm_L
    assert torch.all(norms[1:] > 1.5 * norms[:-1])  # the state grows every loop
