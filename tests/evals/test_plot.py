"""The eval plot's y-axis spans the unigram line, so a 0.013-nat spread between loop counts is not stretched to the
full height."""
from __future__ import annotations

from mythos.evals.plot import plot_loops


def test_y_axis_spans_the_unigram_line(tmp_path):
    losses = {1: 2.510, 2: 2.500, 4: 2.497, 8: 2.499, 16: 2.505}
    lo, hi = plot_loops(losses, {n: 0.004 for n in losses}, 3.42, tmp_path / "e.png", "t", step=300,
                        tokens_seen=1_228_800, scored=16_448)
    assert lo < 2.49 and hi > 3.42
    spread = max(losses.values()) - min(losses.values())
    assert spread / (hi - lo) < 0.02  # the spread takes a sliver of the axis, not all of it
    assert (tmp_path / "e.png").stat().st_size > 1000
