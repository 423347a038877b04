"""Research plots keep their legends off the data: every legend's box lies outside every axes' box."""
from __future__ import annotations

import pytest

from mythos.research import plots


def _grid_res():
    ks, loops = [1, 2, 3, 4, 6, 8], [1, 2, 4, 8]
    seed = {"grid": {str(n): {str(k): 0.5 + 0.05 * n - 0.03 * k for k in ks} for n in loops},
            "curve": [{"step": s, **{f"acc_k{k}": s / 100 for k in (1, 2)}} for s in range(0, 101, 20)]}
    dense = {"grid": {"dense": {str(k): 0.6 - 0.05 * k for k in ks}}}
    return {"task": "khop", "test_k": ks, "train_k": [1, 2], "eval_loops": loops, "chance": 0.25,
            "arms": {"looped": {"loops": 4, "seeds": [seed]}, "looped2": {"loops": 8, "seeds": [seed]},
                     "dense_params": {"loops": None, "seeds": [dense]}, "dense_flops": {"loops": None,
                                                                                        "seeds": [dense]}}}


@pytest.mark.parametrize("draw", ["depth_grid", "depth_curves", "lines"])
def test_legends_do_not_cover_the_axes(draw, tmp_path, monkeypatch):
    seen = {}
    real_save = plots._save

    def capture(fig, path):
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        seen["axes"] = [ax.get_window_extent(r) for ax in fig.axes]
        seen["legends"] = [lg.get_window_extent(r) for ax in fig.axes for lg in [ax.get_legend()] if lg]
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", capture)
    res = _grid_res()
    if draw == "depth_grid":
        res["arms"]["looped2"]["seeds"][0] = res["arms"]["looped"]["seeds"][0]
        out = plots.depth_grid(res, tmp_path / "g.png")
    elif draw == "depth_curves":
        out = plots.depth_curves({**res, "arms": {k: v for k, v in res["arms"].items() if v["loops"]}},
                                 tmp_path / "c.png")
    else:
        out = plots.lines({"a": ([1, 2, 4], [3.0, 2.5, 2.4]), "b": ([1, 2, 4], [3.1, 2.9, 2.8])}, tmp_path / "l.png",
                          xlabel="loops", ylabel="loss", title="t", hlines={"unigram": 3.2}, logx=True)
    assert out.stat().st_size > 1000 and seen["legends"]
    for lg in seen["legends"]:
        for ax in seen["axes"]:
            assert not lg.overlaps(ax), (draw, lg, ax)
