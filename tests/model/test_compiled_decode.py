"""Compiled decode (mythos/model/decode.py): one graph for every position (no recompiles after the warm-up across 64
positions, counted with a CompileCounter backend), and greedy compiled decode gives the full forward's tokens.

The graph-count and numerics matrix use the `aot_eager` backend (the same dynamo graph and functionalisation as
inductor without compiling C++, which takes ~30 s per graph on this CPU); one case runs the real inductor backend."""
import pytest
import torch

from mythos.model.decode import Decoder
from tests.model.helpers import decode_model


_model = decode_model


def _full_forward_greedy(model, out, prompt_len, n_loops):
    """Teacher forcing: the full (uncached) forward's argmax at every generated position."""
    with torch.no_grad():
        return model(out[:, :-1], n_loops=n_loops).logits_BTV[:, prompt_len - 1:].argmax(-1)


def test_no_recompiles_across_64_positions():
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = _model("mla", True)
    cnt = CompileCounterWithBackend("eager")
    prompt = torch.randint(0, model.cfg.vocab_size, (2, 4))
    # guards evaluated at every step (generate skips them after the first): a recompile would show
    dec = Decoder(model, 128, 3, compile=True, backend=cnt, skip_guards=False)
    toks = [dec.prefill(prompt).argmax(-1, keepdim=True)]
    for _ in range(65):  # positions 4 .. 68
        toks.append(dec.step(toks[-1]).argmax(-1, keepdim=True))
    out = torch.cat([prompt, *toks], 1)
    assert cnt.frame_count == 1, cnt.frame_count  # compiled once, at the first step
    assert not counters["recompiles"], dict(counters["recompiles"])
    assert torch.equal(out[:, 4:], _full_forward_greedy(model, out, 4, 3))
    # generate()'s decoder (another cache object, same shapes) runs the same graph; a second generation too
    a = model.generate(prompt, 66, n_loops=3, compile=True, backend=cnt)
    b = model.generate(prompt.flip(1), 66, n_loops=3, compile=True, backend=cnt)
    assert torch.equal(a, out) and not torch.equal(a, b)
    assert cnt.frame_count == 1, cnt.frame_count


def test_recompile_counter_can_fail():
    """The counter sees a recompile when the graph does depend on a moving Python int (a control for the test above)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    cnt = CompileCounterWithBackend("eager")
    step = torch.compile(lambda x, pos: x * pos, backend=cnt, dynamic=False)
    for pos in range(3):
        step(torch.ones(2), pos)
    assert cnt.frame_count > 1


@pytest.mark.parametrize("kind", ["mla", "gqa"])
@pytest.mark.parametrize("act", [False, True])
# 8: past the model's loops.max (6); the graph unrolls every loop. A count inside it (4) compiled with aot_eager is
# test_padding's compiled cases (each kind, ACT on and off, against eager decode of each prompt alone), whose eager
# decode is checked against the full forward there (test_padded_forward_logits_equal_alone) and over 65 positions by
# test_no_recompiles_across_64_positions (3 loops): a 4-loop case here would repeat them.
@pytest.mark.parametrize("n_loops", [1, 8])
def test_compiled_greedy_equals_full_forward(kind, act, n_loops):
    torch._dynamo.reset()
    model = _model(kind, act)
    prompt = torch.randint(0, model.cfg.vocab_size, (2, 5))
    out = model.generate(prompt, 10, n_loops=n_loops, compile=True, backend="aot_eager")
    assert len(set(out[0, 5:].tolist())) > 2, "degenerate continuation: a weak comparison"
    assert torch.equal(out[:, 5:], _full_forward_greedy(model, out, 5, n_loops))
    assert torch.equal(out, model.generate(prompt, 10, n_loops=n_loops))  # and the eager dynamic cache's tokens


@pytest.mark.slow
def test_inductor_compiled_greedy_equals_full_forward(tmp_path_factory, worker_id):
    """The real backend (C++ kernels on CPU): same tokens as the full forward and as eager decode. On the CLI's tiny
    model (configs/tiny-cpu.toml at the tests' tiny sizes; random weights) at the shape of `mythos-generate --compile`
    with two prompts at 2 loops (test_generate_cli, the README's line): the same graph, so one cold inductor compile
    serves all three (generate_compile_lock). More unrolled loops and compiled masked ACT: the aot_eager cases."""
    from mythos.config import load_config, parse_overrides
    from mythos.evals.generate_cli import left_pad
    from mythos.model import Mythos
    from tests.conftest import REPO, TINY_MODEL_ARGS, generate_compile_lock

    torch._dynamo.reset()
    torch.manual_seed(0)
    overrides = parse_overrides([*TINY_MODEL_ARGS, "--model.vocab_size", "300"])  # the vocab of the tests' data
    cfg = load_config(REPO / "configs" / "tiny-cpu.toml", overrides)
    model = Mythos(cfg.model.replace(init_std=0.3)).eval()  # weights large enough for varied greedy tokens
    prompts = [[5, 17, 42, 9, 63, 2, 80], [31, 7, 250]]
    tokens_BT, mask_BT = left_pad(prompts)
    t = tokens_BT.shape[1]
    eager = model.generate(tokens_BT, 12, n_loops=2, mask_BT=mask_BT)
    for i, p in enumerate(prompts):  # each row's continuation is the full forward's argmax of the row alone
        row = eager[i:i + 1, t - len(p):]
        assert torch.equal(row[:, len(p):], _full_forward_greedy(model, row, len(p), 2))
    assert len(set(eager[0, t:].tolist())) > 2, "degenerate continuation: a weak comparison"
    with generate_compile_lock(tmp_path_factory, worker_id):
        assert torch.equal(model.generate(tokens_BT, 12, n_loops=2, mask_BT=mask_BT, compile=True), eager)


def test_act_skip_mode_is_eager_only():
    model = _model("mla", True)
    with pytest.raises(ValueError, match="eager-only"):
        Decoder(model, 64, 4, compile=True, skip_halted=True)


def test_gathered_experts_equal_sorted_dispatch():
    """The compiled decoder's MoE path (each token against its gathered experts) computes the sorted dispatch's
    function (fp32, <= 1e-6 abs on outputs of magnitude ~1), and the decoder turns it on."""
    model = _model("mla", False)
    moe = model.moe_modules()[0]
    x_ND = torch.randn(3, model.cfg.dim)
    with torch.no_grad():
        want, _ = moe(x_ND[None])
        idx_NK, gates_NK, _ = moe.route(x_ND)
        got = moe._gathered(x_ND, idx_NK, gates_NK)
    assert (got - want[0]).abs().max().item() <= 1e-6
    assert not moe.gather_decode
    Decoder(model, 64, 2, compile=True, backend="eager")
    assert moe.gather_decode
