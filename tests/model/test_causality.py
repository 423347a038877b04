"""Changing token j never changes logits at positions < j (MLA and GQA, with MoE and ACT)."""
import pytest
import torch

from mythos.model import Mythos
from tests.model.helpers import micro_cfg


@pytest.mark.parametrize("kind", ["mla", "gqa"])
@pytest.mark.parametrize("act", [False, True])
@pytest.mark.parametrize("train", [False, True])
def test_causal(kind, act, train):
    torch.manual_seed(0)
    cfg = micro_cfg(kind, act=act)
    model = Mythos(cfg).double().train(train)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, cfg.vocab_size, (2, 24), generator=g)
    with torch.no_grad():
        base = model(x, n_loops=4).logits_BTV
        for j in (0, 7, 23):
            y = x.clone()
            y[:, j] = (y[:, j] + 1 + torch.randint(0, cfg.vocab_size - 1, (2,), generator=g)) % cfg.vocab_size
            out = model(y, n_loops=4).logits_BTV
            # float64: any leak from token j would be orders of magnitude above 1e-10 (row-order effects in the
            # expert matmuls after re-sorting are ~1e-16).
            assert (out[:, :j] - base[:, :j]).abs().max().item() <= 1e-10 if j else True, f"position < {j} changed"
            assert not torch.allclose(out[:, j:], base[:, j:]), "the change had no effect at all"
