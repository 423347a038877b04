"""mythos-eval says how much data its number rests on: tokens scored, the validation split's size (a warning when it
is small or wraps), the comparison with the unigram entropy worded by its sign, and a plot with error bars."""
from __future__ import annotations

import json

import pytest

from mythos.evals.cli import VAL_WARN_TOKENS, unigram_comparison, val_size_warning


def test_unigram_comparison_is_worded_by_its_sign():
    above = unigram_comparison(5.0, 4.5)
    assert "11% above it" in above and "below" not in above and "-" not in above.split("(")[1]
    assert "56% below it" in unigram_comparison(2.0, 4.5)


def test_small_split_warning():
    w = val_size_warning(16448, 69, 1)
    assert w.startswith("warning: ") and "only 69 tokens in 1 documents" in w and "238.4 times" in w
    assert "--val-min-tokens" in w
    assert val_size_warning(16448, 10 * VAL_WARN_TOKENS, 50) is None
    assert "scored 2.0 times" in val_size_warning(2 * VAL_WARN_TOKENS * 10, 10 * VAL_WARN_TOKENS, 50)


@pytest.mark.slow
def test_eval_reports_tokens_and_warns_on_a_small_split(profiled_run, prepared_data, capsys, one_thread):
    """mythos-eval's main runs in this process, on the 3-step run test_profile reads too (conftest.profiled_run, the
    trainer in its own process): no second interpreter start."""
    from mythos.evals.cli import main
    run, r = profiled_run
    assert r.returncode == 0, r.stderr
    capsys.readouterr()
    assert main([str(run), "--loops", "1,2", "--batches", "2"]) == 0
    r = capsys.readouterr()
    meta = json.loads((prepared_data / "metadata.json").read_text())
    split = meta["splits"]["val"]["tokens"]
    assert split < VAL_WARN_TOKENS  # the shared test corpus is small
    assert f"scored 512 tokens per loop count (2 batches x 4 sequences x 64); validation split: {split} tokens" \
        in r.out, r.out
    assert f"warning: the validation split holds only {split} tokens" in r.err
    line = next(ln for ln in r.out.splitlines() if ln.startswith("unigram entropy"))
    assert "% above it" in line or "% below it" in line
    report = json.loads((run / "eval_loops.json").read_text())
    assert report["tokens_scored"] == 512 and report["step"] == 3 and report["tokens_seen"] == 3 * 4 * 64
    assert set(report["stderr_by_loops"]) == {"1", "2"} and all(v >= 0 for v in report["stderr_by_loops"].values())
    assert (run / "eval_loops.png").stat().st_size > 1000
