"""ACT that saves compute at inference (mythos/model/halting.py): halted rows are not computed in cached decode,
their skipped loops' KV entries are copies of their last computed loop (Huginn), batching changes nothing, and
training still runs exactly n loops for every row."""
import torch

from mythos.model import KVCache, Mythos
from tests.model.helpers import micro_cfg

N_LOOPS = 5


def _model(halt_bias: float | None = None, std: float = 0.0):
    torch.manual_seed(0)
    cfg = micro_cfg("mla", act=True)
    model = Mythos(cfg).eval()
    torch.nn.init.normal_(model.halt.weight, std=std)
    if halt_bias is not None:
        torch.nn.init.constant_(model.halt.bias, halt_bias)
    return model, cfg


def _decode(model, x_BT, skip: bool, prefill: int = 4):
    cache = KVCache(skip_halted=skip)
    with torch.no_grad():
        parts = [model(x_BT[:, :prefill], n_loops=N_LOOPS, cache=cache).logits_BTV]
        outs = []
        for i in range(prefill, x_BT.shape[1]):
            out = model(x_BT[:, i:i + 1], n_loops=N_LOOPS, cache=cache)
            parts.append(out.logits_BTV)
            outs.append(out)
    return torch.cat(parts, 1), cache, outs


def _rows_per_loop(model):
    """Batch rows entering the looped block, per call (a forward hook: nothing in the model is patched)."""
    seen = []
    handle = model.recurrence.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    return seen, handle


def test_no_halting_skip_equals_masked_and_full_forward():
    model, cfg = _model(halt_bias=-30.0)  # p ~ 0: nobody halts before the last loop
    x = torch.randint(0, cfg.vocab_size, (3, 10))
    skip, _, _ = _decode(model, x, skip=True)
    masked, _, _ = _decode(model, x, skip=False)
    with torch.no_grad():
        full = model(x, n_loops=N_LOOPS).logits_BTV
    assert (skip - masked).abs().max().item() <= 1e-5
    assert (skip - full).abs().max().item() <= 1e-4


def test_halted_rows_are_not_computed():
    model, cfg = _model(std=1.0)  # a halting head that halts rows at different loops
    x = torch.randint(0, cfg.vocab_size, (6, 9))
    cache = KVCache(skip_halted=True)
    computed, used = 0, 0.0
    with torch.no_grad():
        model(x[:, :4], n_loops=N_LOOPS, cache=cache)
        for i in range(4, x.shape[1]):
            seen, handle = _rows_per_loop(model)
            try:
                out = model(x[:, i:i + 1], n_loops=N_LOOPS, cache=cache)
            finally:
                handle.remove()
            computed += sum(seen)
            used += float(out.halt_stats["mean_steps"]) * x.shape[0]
    assert computed == round(used)  # one row-loop computed per loop a row actually used
    assert computed < N_LOOPS * x.shape[0] * (x.shape[1] - 4)  # and some were skipped


def test_skipped_loops_reuse_the_last_computed_kv_entry():
    model, cfg = _model(std=1.0)
    x = torch.randint(0, cfg.vocab_size, (6, 6))
    early = 0
    for b in range(x.shape[0]):  # one row at a time: the loops it computes are the recurrence calls it makes
        cache = KVCache(skip_halted=True)
        with torch.no_grad():
            model(x[b:b + 1, :5], n_loops=N_LOOPS, cache=cache)
            seen, handle = _rows_per_loop(model)
            try:
                model(x[b:b + 1, 5:6], n_loops=N_LOOPS, cache=cache)
            finally:
                handle.remove()
        used = len(seen)
        entries = [cache.layers[("loop", t)].buffers["c_kv"][0, 5] for t in range(N_LOOPS)]
        for t in range(1, used):  # computed loops give new entries
            assert not torch.equal(entries[t], entries[t - 1])
        for t in range(used, N_LOOPS):  # skipped loops hold a copy of the last computed one
            assert torch.equal(entries[t], entries[used - 1])
        early += used < N_LOOPS
    assert early > 0, "no row halted early: the check would be empty"


def test_batching_changes_nothing():
    model, cfg = _model(std=1.0)
    x = torch.randint(0, cfg.vocab_size, (4, 8))
    batched, _, _ = _decode(model, x, skip=True)
    for b in range(x.shape[0]):
        alone, _, _ = _decode(model, x[b:b + 1], skip=True)
        assert (alone[0] - batched[b]).abs().max().item() <= 1e-5


def test_training_runs_every_loop_for_every_row():
    model, cfg = _model(halt_bias=30.0)  # p ~ 1: every position halts after its first loop
    model.train()
    seen, handle = _rows_per_loop(model)
    x = torch.randint(0, cfg.vocab_size, (3, 7))
    try:
        out = model(x, n_loops=N_LOOPS, cache=KVCache(skip_halted=True))  # grad on: the skip is never taken
    finally:
        handle.remove()
    assert seen == [3] * N_LOOPS
    assert out.router_load_LE.shape[0] == N_LOOPS
    assert float(out.halt_stats["mean_steps"]) == 1.0


def test_halt_steps_per_position_are_reported():
    """halt_steps_BT: the loops each position ran (the parity ACT experiment plots them against length); its mean
    is the logged mean_steps, and without ACT it is None."""
    model, cfg = _model(halt_bias=-1.0, std=1.0)
    x = torch.randint(0, cfg.vocab_size, (3, 7))
    with torch.no_grad():
        out = model(x, n_loops=N_LOOPS)
    steps = out.halt_steps_BT
    assert steps.shape == (3, 7) and float(steps.min()) >= 1 and float(steps.max()) <= N_LOOPS
    assert float(steps.mean()) == float(out.halt_stats["mean_steps"]) and len(set(steps.flatten().tolist())) > 1
    plain = Mythos(micro_cfg("mla")).eval()
    with torch.no_grad():
        assert plain(x, n_loops=2).halt_steps_BT is None
