"""A tiny run of every experiment through the CLI: each output file is produced and well formed."""
import json
import math

import pytest

from mythos.research.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


def _check_outputs(out_dir):
    res = json.loads((out_dir / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
    assert res["partial"] is False and res["wall_seconds"] > 0
    assert (out_dir / "log.txt").read_text().strip()
    assert res["plots"]
    import matplotlib.image
    for name in res["plots"]:
        path = out_dir / name
        assert path.read_bytes()[:8] == PNG_MAGIC, name
        h, w = matplotlib.image.imread(path).shape[:2]
        assert h > 100 and w > 100, name
    return res


def _finite(x):
    return isinstance(x, float) and math.isfinite(x)


@pytest.mark.parametrize("task", ["khop"])
def test_depth_smoke(task, tmp_path):
    assert main([task, "--scale", "tiny", "--out", str(tmp_path)]) == 0
    res = _check_outputs(tmp_path / task)
    assert set(res["arms"]) == {"looped-sampled", "looped-fixed", "dense-params", "dense-flops"}
    for name, arm in res["arms"].items():
        grid = arm["seeds"][0]["grid"]
        assert list(grid) == ([str(n) for n in res["eval_loops"]] if arm["loops"] else ["dense"])
        for row in grid.values():
            assert [int(k) for k in row] == res["test_k"] and all(0 <= a <= 1 for a in row.values())
        assert arm["seeds"][0]["curve"][-1]["step"] == res["scale"]["steps"]
    assert res["arms"]["dense-flops"]["n_layers"] == 2 + res["scale"]["loop_mean"]


def test_lm_smoke(prepared_data, tmp_path):
    assert main(["lm", "--scale", "tiny", "--out", str(tmp_path), "--data", str(prepared_data)]) == 0
    res = _check_outputs(tmp_path / "lm")
    assert len(res["runs"]) == 11 and _finite(res["unigram_entropy"])
    for name, r in res["runs"].items():
        assert _finite(r["val_loss"]) and r["params"] > 0 and r["train_flops"] > 0
        if name.startswith("looped"):
            assert [int(n) for n in r["loss_by_loops"]] == [1, 2, 3, 4, 6, 8, 12, 16]
            assert len(r["diagnostics"]["per_loop"]) == 16 and _finite(r["val_loss_identity_block"])
            assert 0 < r["diagnostics"]["decay_max"] < 1
    table = (tmp_path / "lm" / "summary.md").read_text()
    assert all(f"| {name} |" in table for name in res["runs"])  # every run has its row


def test_stability_smoke(prepared_data, tmp_path):
    assert main(["stability", "--scale", "tiny", "--out", str(tmp_path), "--data", str(prepared_data)]) == 0
    res = _check_outputs(tmp_path / "stability")
    assert set(res["runs"]) == {f"{k}-lr{m}x" for k in ("parcae", "unconstrained") for m in (1, 3, 10)}
    for r in res["runs"].values():
        assert isinstance(r["diverged"], bool) and len(r["losses"]) == res["scale"]["lm"]["steps"]
        assert len(r["state_norm_per_loop"]) == 24


def test_act_smoke(prepared_data, tmp_path):
    assert main(["act", "--scale", "tiny", "--out", str(tmp_path), "--data", str(prepared_data)]) == 0
    res = _check_outputs(tmp_path / "act")
    assert list(res["thresholds"]) == ["0.5", "0.8", "0.95", "0.99"]
    for row in res["thresholds"].values():
        for mode in ("masked", "skip"):
            assert _finite(row[mode]["loss"]) and 1 <= row[mode]["loops_per_token"] <= res["n_loops"]
            assert row[mode]["tokens_per_s"] > 0


def test_bad_input_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["lm", "--scale", "tiny", "--out", str(tmp_path), "--data", str(tmp_path / "nope")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no prepared corpus" in err and "\n" not in err


def test_isodepth_smoke_and_resume(tmp_path):
    from mythos.research import isodepth
    assert main(["isodepth", "--scale", "tiny", "--out", str(tmp_path)]) == 0
    res = _check_outputs(tmp_path / "isodepth")
    s = isodepth.SCALES["tiny"]
    assert res["arms"] == [f"looped-1x{s.loops}", f"dense-{s.loops}", "dense-1"]
    assert sorted(res["runs"]) == sorted(f"{a}_s0" for a in res["arms"])
    looped = res["runs"][f"looped-1x{s.loops}_s0"]
    assert list(looped["accuracy"]) == [str(s.loops), str(2 * s.loops)]
    assert all(0 <= a <= 1 for a in looped["accuracy"][str(s.loops)].values())
    cfgs = isodepth.arm_configs(s)  # the looped block has the dense FFN width
    assert cfgs[f"looped-1x{s.loops}"].moe.expert_dim == cfgs["dense-1"].dense_ffn_dim
    table = (tmp_path / "isodepth" / "summary.md").read_text().splitlines()
    assert len(table) == 2 + 4 and all(line.count("|") == table[0].count("|") for line in table)
    assert main(["isodepth", "--scale", "tiny", "--out", str(tmp_path)]) == 0  # resumes: nothing retrained
    assert (tmp_path / "isodepth" / "log.txt").read_text().count("finished earlier, skipped") == 3


@pytest.mark.parametrize("scale", ["tiny", "cpu", "gpu"])
def test_isodepth_every_scale_builds(scale):
    from mythos.model import model_stats
    from mythos.research import isodepth
    s = isodepth.SCALES[scale]
    cfgs = isodepth.arm_configs(s)
    p = {a: model_stats(c, seq_len=8)["total_params"] for a, c in cfgs.items()}
    looped, one = p[f"looped-1x{s.loops}"], p["dense-1"]
    assert abs(looped - one) / one < 0.1 and p[f"dense-{s.loops}"] > looped  # + the injection B (dim^2)
