"""attention.position = "none": still causal, cached decode still equals the full forward, and positions are
really gone (the RoPE angle table no longer matters), for MLA and GQA."""
import pytest
import torch

from mythos.errors import UserError
from mythos.model import Mythos
from tests.model.helpers import micro_cfg
from tests.model.test_kv_cache import _decode_logits


def _cfg(kind, position="none", **top):
    cfg = micro_cfg(kind, **top)
    cfg.attention.position = position
    return cfg.validate()


@pytest.mark.parametrize("kind", ["mla", "gqa"])
def test_no_position_is_causal(kind):
    torch.manual_seed(0)
    cfg = _cfg(kind)
    model = Mythos(cfg).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, cfg.vocab_size, (2, 16), generator=g)
    with torch.no_grad():
        base = model(x, n_loops=4).logits_BTV
        for j in (3, 9, 15):
            y = x.clone()
            y[:, j] = (y[:, j] + 1) % cfg.vocab_size
            out = model(y, n_loops=4).logits_BTV
            assert (out[:, :j] - base[:, :j]).abs().max().item() <= 1e-10, f"position < {j} changed"
            assert not torch.allclose(out[:, j:], base[:, j:])


@pytest.mark.parametrize("kind", ["mla", "gqa"])
@pytest.mark.parametrize("n_loops", [3, 10])
def test_no_position_cached_decode_matches_full_forward(kind, n_loops):
    torch.manual_seed(0)
    cfg = _cfg(kind)
    model = Mythos(cfg).eval()
    x = torch.randint(0, cfg.vocab_size, (2, 20))
    with torch.no_grad():
        full = model(x, n_loops=n_loops).logits_BTV
        dec, _ = _decode_logits(model, x, n_loops, prefill=7)
    assert (dec - full).abs().max().item() <= 1e-4


@pytest.mark.parametrize("kind", ["mla", "gqa"])
def test_no_position_ignores_rope_tables(kind):
    """With position none, rope_theta (the rotation angles) changes nothing; with rope it changes the logits."""
    x = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(3))
    for position, same in (("none", True), ("rope", False)):
        outs = []
        for theta in (10000.0, 7.0):
            torch.manual_seed(0)
            cfg = _cfg(kind, position)
            cfg.attention.rope_theta = theta
            with torch.no_grad():
                outs.append(Mythos(cfg).eval()(x, n_loops=3).logits_BTV)
        assert torch.allclose(outs[0], outs[1]) == same, position


def test_position_key_validated():
    cfg = micro_cfg("gqa")
    cfg.attention.position = "alibi"
    with pytest.raises(UserError, match="model.attention.position"):
        cfg.validate()
