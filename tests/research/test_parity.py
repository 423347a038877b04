"""The parity experiment: loops = n reaches the model, the tiny run makes its files, and a rerun resumes."""
import json

import pytest
import torch

from mythos.research import parity
from mythos.research.cli import main
from tests.research.helpers import spy_forwards

pytestmark = pytest.mark.usefixtures("one_thread")


def test_loops_eq_n_reaches_the_model(monkeypatch):
    calls = spy_forwards(monkeypatch)
    s = parity.SCALES["tiny"]
    row = parity.train_one("loops=n", s, 0, log=lambda m: None)
    train = [(n, bits) for training, n, bits in calls if training]
    assert len(train) == s.steps and len({bits for _, bits in train}) > 1  # the curriculum varies n
    assert all(n == bits for n, bits in train), train
    evals = {(n, bits) for training, n, bits in calls if not training}
    for bits in range(1, s.n_test + 1):  # every length at n/2, n and 2n loops
        assert {((bits + 1) // 2, bits), (bits, bits), (2 * bits, bits)} <= evals
    assert set(row["last_bit"]) == {"n/2", "n", "2n"} and len(row["last_bit"]["n"]) == s.n_test


def test_independent_loops_do_not_follow_n(monkeypatch):
    calls = spy_forwards(monkeypatch)
    s = parity.SCALES["tiny"].__class__(**{**parity.SCALES["tiny"].__dict__, "steps": 30})
    parity.train_one("independent", s, 0, log=lambda m: None)
    train = [(n, bits) for training, n, bits in calls if training]
    assert any(n != bits for n, bits in train) and all(1 <= n <= s.n_train for n, _ in train)


def test_parity_tiny_smoke_and_resume(tmp_path, monkeypatch):
    assert main(["parity", "--scale", "tiny", "--out", str(tmp_path)]) == 0
    out = tmp_path / "parity"
    res = json.loads((out / "results.json").read_text())
    assert res["partial"] is False and set(res["summary"]) == set(parity.HEADLINE_ARMS)
    assert res["plots"] == ["parity_vs_length.png", "parity_by_position.png"]
    for name in res["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = sorted(p.name for p in (out / "tiny" / "runs").iterdir())
    assert runs == sorted(f"{a}_s0.json" for a in parity.HEADLINE_ARMS)
    n_probe = str(res["scale"]["n_probe"])
    assert sorted(res["run_files"]) == sorted(f"tiny/runs/{name}" for name in runs)
    rows = {p[len("tiny/runs/"):-len(".json")]: json.loads((out / p).read_text()) for p in res["run_files"]}
    for key, row in rows.items():
        for sch, by_n in row["last_bit"].items():
            assert 0 <= by_n[n_probe] <= 1 and len(row["position_acc"][sch][n_probe]) == int(n_probe)
    assert rows["dense-flops_s0"]["params"] != rows["loops=n_s0"]["params"]
    assert res["summary"]["loops=n"]["last_bit_at_probe"]["n"] == [round(rows["loops=n_s0"]["last_bit"]["n"][n_probe], 4)]
    # a rerun trains nothing; a stale file (other settings) is trained again
    trained = []
    monkeypatch.setattr(parity, "train_one", lambda name, s, seed, log: trained.append(name) or pytest.fail("ran"))
    assert main(["parity", "--scale", "tiny", "--out", str(tmp_path)]) == 0
    assert trained == [] and "finished earlier, skipped" in (out / "log.txt").read_text()
    stale = out / "tiny" / "runs" / "dense-flops_s0.json"
    stale.write_text(json.dumps({**json.loads(stale.read_text()), "fingerprint": "old"}))
    with pytest.raises(BaseException):
        main(["parity", "--scale", "tiny", "--out", str(tmp_path)])
    assert trained == ["dense-flops"]


def test_unknown_arm_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["parity", "--scale", "tiny", "--out", str(tmp_path), "--arms", "loops=n,bogus"])
    assert exc.value.code == 2 and "bogus" in capsys.readouterr().err


@pytest.mark.parametrize("scale", ["tiny", "cpu", "gpu"])
def test_every_scale_builds_every_arm(scale):
    """Configs only (no model build): every arm valid at every scale, the probe at 1.33x, dense-flops = n_train layers
    within 3% of the looped model's FLOPs/token at n_train loops, dense-params within 15% of its parameters."""
    from mythos.model import model_stats
    s = parity.SCALES[scale]
    assert s.n_test == 2 * s.n_train and s.n_probe == round(4 * s.n_train / 3)
    cfgs = {a: parity.arm_config(a, s) for a in parity.ARMS}
    assert cfgs["dense-flops"].n_layers == s.n_train and cfgs["loops=n-nopos"].attention.position == "none"
    assert cfgs["loops=n"].attention.position == "rope" and cfgs["loops=n"].loops.backprop_k == 0
    looped, dense = (model_stats(cfgs[a], seq_len=8)["total_params"] for a in ("loops=n", "dense-params"))
    assert abs(dense - looped) / looped < 0.15
    looped, dense = (model_stats(cfgs[a], seq_len=s.n_train + 1)["flops_per_token"] for a in ("loops=n", "dense-flops"))
    assert cfgs["loops=n"].loops.train_count == s.n_train and abs(dense - looped) / looped < 0.03
