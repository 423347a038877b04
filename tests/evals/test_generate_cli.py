"""mythos-generate with several prompts (one left-padded batch) prints each prompt's continuation exactly as a run
with that prompt alone; --compile and --static-cache print the eager text (greedy)."""
from __future__ import annotations

import pytest

from mythos.evals.generate_cli import left_pad, main
from tests.conftest import generate_compile_lock, run_cli, train_args

PROMPTS = ["def function_3(x, y=3):\n    if x > ", "import", "class Foo:\n    def bar(self"]


@pytest.fixture(scope="module")
def run(prepared_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("gen_run") / "run"
    r = run_cli(train_args(run, prepared_data, 4))
    assert r.returncode == 0, r.stderr
    return run


def _generate(capsys, run, *args):
    assert main([str(run), "--loops", "2", "--max-new-tokens", "12", *args]) == 0
    return capsys.readouterr().out


def test_left_pad():
    tokens, mask = left_pad([[5, 6, 7], [8]])
    assert tokens.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_several_prompts_equal_each_alone(run, capsys, one_thread):
    alone = [_generate(capsys, run, "--prompt", p) for p in PROMPTS]
    batched = _generate(capsys, run, *[a for p in PROMPTS for a in ("--prompt", p)])
    assert batched == "".join(f"### {i + 1}\n{text}" for i, text in enumerate(alone))
    assert _generate(capsys, run, "--static-cache", *[a for p in PROMPTS for a in ("--prompt", p)]) == batched


@pytest.mark.slow
def test_compile_prints_the_eager_text(run, capsys, one_thread, tmp_path_factory, worker_id):
    eager = _generate(capsys, run, "--prompt", PROMPTS[0], "--prompt", PROMPTS[1])
    with generate_compile_lock(tmp_path_factory, worker_id):  # the README's --compile line compiles this graph too
        assert _generate(capsys, run, "--compile", "--prompt", PROMPTS[0], "--prompt", PROMPTS[1]) == eager
