"""The parity ablations and the ACT arm: each ablation changes one part of the loops = n model, the committed runs
stay valid (same fingerprints), the tiny run writes the ablation and ACT tables and plots, and ACT's loops-against-n
data is well formed (every length, every bit, within the loop cap; training runs n_train loops whatever n)."""
import dataclasses
import json
from pathlib import Path

import pytest

from mythos.research import parity
from mythos.research.cli import main
from tests.research.helpers import spy_forwards

pytestmark = pytest.mark.usefixtures("one_thread")
RUNS = Path(__file__).resolve().parents[2] / "docs" / "research" / "results" / "parity" / "cpu" / "runs"


def _flat(cfg) -> dict:
    out = {}

    def walk(prefix, d):
        for k, v in d.items():
            walk(f"{prefix}{k}.", v) if isinstance(v, dict) else out.__setitem__(prefix + k, v)
    walk("", dataclasses.asdict(cfg))
    return out


@pytest.mark.parametrize("arm", list(parity.ABLATIONS))
def test_each_ablation_changes_one_part(arm):
    s = parity.SCALES["cpu"]
    base, abl = _flat(parity.arm_config("loops=n", s)), _flat(parity.arm_config(arm, s))
    changed = {k for k in base if base[k] != abl[k]}
    expected = {"loops=n+prelude-coda": {"n_prelude", "n_coda"}}.get(arm)
    assert changed == expected if expected else len(changed) == 1, changed
    assert parity.ABLATIONS[arm][0] in parity.BASELINE_SETTINGS


def test_committed_runs_keep_their_fingerprints():
    """Renaming or reshaping an arm must not make the committed CPU results stale (they would be retrained)."""
    s = parity.SCALES["cpu"]
    files = sorted(RUNS.glob("*.json"))
    assert files
    for path in files:
        row = json.loads(path.read_text())
        assert row["fingerprint"] == parity.fingerprint(row["arm"], s, row["seed"]), path.name


def test_act_arm_runs_n_train_loops_and_records_loops_used(monkeypatch):
    calls = spy_forwards(monkeypatch)
    s = parity.SCALES["tiny"]
    row = parity.train_one("act", s, 0, log=lambda m: None)
    train = [(n, bits) for training, n, bits in calls if training]
    assert len({bits for _, bits in train}) > 1  # the curriculum varies n; the loop count does not follow it
    assert all(n in (None, s.n_train) for n, _ in train)
    caps = {f"max {s.n_train}": s.n_train, f"max {s.n_test}": s.n_test}
    assert set(row["loops_used"]) == set(caps) == set(row["last_bit"])
    for name, cap in caps.items():
        used = row["loops_used"][name]
        assert sorted(map(int, used)) == list(range(1, s.n_test + 1))
        for n, per_bit in used.items():
            assert len(per_bit) == int(n) and all(1 <= v <= cap for v in per_bit)


def test_ablation_and_act_tiny_smoke(tmp_path):
    arms = ["loops=n", "act", *parity.ABLATIONS]
    assert main(["parity", "--scale", "tiny", "--out", str(tmp_path), "--arms", ",".join(arms)]) == 0
    out = tmp_path / "parity"
    res = json.loads((out / "results.json").read_text())
    assert {"parity_ablations.png", "parity_act.png"} <= set(res["plots"])
    for name in res["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "ablations.md").read_text().splitlines()
    assert len(table) == 2 + 1 + len(parity.ABLATIONS)  # header, rule, baseline, one row per ablation
    assert all(line.count("|") == table[0].count("|") for line in table)
    for arm in parity.ABLATIONS:
        assert sum(f"| {arm} |" in line for line in table) == 1
    act = (out / "act.md").read_text().splitlines()
    assert len(act) == 2 + res["scale"]["n_test"] and all(line.count("|") == act[0].count("|") for line in act)


def test_training_draws_replay_what_the_run_saw(monkeypatch):
    """training_draws gives the (bits, loops) of every step the trainer actually ran (the independent-arm analysis)."""
    calls = spy_forwards(monkeypatch)
    s = dataclasses.replace(parity.SCALES["tiny"], steps=20)
    for arm in ("independent", "loops=n"):
        calls.clear()
        parity.train_one(arm, s, 1, log=lambda m: None)
        assert parity.training_draws(arm, s, 1) == [(bits, n) for training, n, bits in calls if training]
