"""The validation split has a token floor: a small corpus gets more than one tiny document of validation data, the
split stays a hash rule (val and train never share a document) and never takes more than VAL_MAX_SHARE."""
from __future__ import annotations

import random

from data_prep import valsplit
from data_prep.cli import main
from data_prep.sources import hash_frac
from mythos.data import read_metadata
from tests.data.datahelp import code_text
from tests.data.test_roundtrip import decoded_docs

PREP = ["--vocab-size", "300", "--sample-mb", "0.5", "--workers", "1", "--no-progress"]


def _docs(n: int, size: int = 100):
    rng = random.Random(0)
    return [(t, t.encode()) for t in ("".join(rng.choice("abcdefgh ") for _ in range(size)) for _ in range(n))]


def _val(docs, thr):
    return [t for t, d in docs if hash_frac(d) < thr]


def test_floor_raises_the_fraction_to_the_token_floor():
    docs = _docs(200)
    thr, floored = valsplit.val_threshold(docs, len, 0.01, 1000)
    val = _val(docs, thr)
    assert floored and thr > 0.01
    assert sum(map(len, val)) >= 1000 and sum(map(len, val)) - 100 < 1000  # just enough documents
    assert len(_val(docs, 0.01)) <= 3  # what the fraction alone would have kept


def test_floor_is_capped_and_can_be_switched_off(monkeypatch):
    docs = _docs(200)
    thr, floored = valsplit.val_threshold(docs, len, 0.01, 10**9)
    assert floored and sum(map(len, _val(docs, thr))) <= valsplit.VAL_MAX_SHARE * 200 * 100
    assert valsplit.val_threshold(docs, len, 0.01, 0) == (0.01, False)
    assert valsplit.val_threshold(docs, len, 0.0, 1000) == (0.0, False)
    assert valsplit.val_threshold(docs, len, 0.5, 1000) == (0.5, False)  # the fraction already holds enough
    monkeypatch.setattr(valsplit, "SCAN_BYTES", 5000)  # a corpus too big to scan keeps the plain fraction
    assert valsplit.val_threshold(docs, len, 0.01, 1000) == (0.01, False)


def test_prep_keeps_a_validation_split_of_at_least_the_floor(tmp_path, capsys):
    rng = random.Random(3)
    src = tmp_path / "c"
    src.mkdir()
    for i in range(120):
        (src / f"f{i:03d}.py").write_text(code_text(rng, 30))
    out = tmp_path / "out"
    assert main([str(src), "--out", str(out), "--val-fraction", "0.005", "--val-min-tokens", "3000", *PREP]) == 0
    meta = read_metadata(out)
    assert meta["val_floor_applied"] and meta["val_min_tokens"] == 3000
    assert meta["splits"]["val"]["tokens"] >= 3000 and meta["splits"]["val"]["documents"] >= 2
    assert "val: raised from --val-fraction 0.005" in capsys.readouterr().out
    train, val = decoded_docs(out, "train"), decoded_docs(out, "val")
    assert not set(train) & set(val) and len(train) + len(val) == 120
    assert all(hash_frac(t.encode()) < meta["val_threshold"] for t in val)
