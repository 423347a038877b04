import torch

from mythos.model import LoopConfig, LoopSampler, ModelConfig


def _draws(sampler, seed, n):
    g = torch.Generator().manual_seed(seed)
    return [sampler.sample(g) for _ in range(n)]


def test_same_seed_same_counts_and_mean():
    loops = ModelConfig.named("tiny").loops
    s = LoopSampler(loops)
    a, b = _draws(s, 123, 4000), _draws(LoopSampler(loops), 123, 4000)
    assert a == b, "same seed -> same counts (every rank draws the same)"
    assert a != _draws(s, 124, 4000)
    mean = sum(a) / len(a)
    assert abs(mean - loops.mean) <= 0.05 * loops.mean, mean
    assert min(a) >= loops.min and max(a) <= loops.max and len(set(a)) > 3


def test_poisson_mean_8_like_parcae():
    loops = LoopConfig(distribution="poisson", mean=8.0, min=1, max=32)
    draws = _draws(LoopSampler(loops), 0, 4000)
    assert abs(sum(draws) / len(draws) - 8.0) <= 0.4


def test_fixed():
    s = LoopSampler(LoopConfig(distribution="fixed", mean=5.0))
    assert _draws(s, 0, 20) == [5] * 20


def test_global_rng_untouched():
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    _draws(LoopSampler(LoopConfig()), 0, 10)
    assert torch.equal(torch.rand(1), before)
