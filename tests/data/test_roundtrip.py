"""Prep -> shards -> decode gives back every document exactly, for every source kind."""
from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pytest

from data_prep.cli import main
from mythos.data import IndexedDataset, Tokenizer, read_metadata
from tests.data.datahelp import SPECIAL_DOCS, make_corpus

PREP = ["--vocab-size", "400", "--sample-mb", "1", "--no-progress"]


def expected_split(text: str, frac: float) -> str:
    """The documented rule, re-implemented: blake2b-64 of the UTF-8 bytes, little-endian, over 2**64."""
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
    return "val" if h / 2**64 < frac else "train"


def decoded_docs(out, split) -> list[str]:
    meta = read_metadata(out)
    tok = Tokenizer(out / "tokenizer.model")
    docs = []
    for shard in meta["splits"][split]["shards"]:
        ds = IndexedDataset(out / shard["name"])
        for i in range(len(ds)):
            ids = ds[i]
            assert int(ids[-1]) == meta["eos_id"]
            assert meta["eos_id"] not in ids[:-1].tolist()
            docs.append(tok.decode(ids[:-1].tolist()))
    return docs


def walk_order(docs: dict) -> list[str]:
    """Sorted walk: a directory's files (sorted) before its subdirectories (sorted)."""
    return sorted(docs, key=lambda rel: (rel.count("/"), rel))


@pytest.fixture(scope="module")
def prepped(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rt")
    docs = make_corpus(tmp / "corpus")
    out = tmp / "out"
    assert main([str(tmp / "corpus"), "--out", str(out), "--val-fraction", "0.2", "--workers", "2", *PREP]) == 0
    return tmp, docs, out


def test_round_trip_exact_and_split_by_hash(prepped):
    _, docs, out = prepped
    texts = [docs[k] for k in walk_order(docs)]
    for split in ("train", "val"):
        want = [t for t in texts if expected_split(t, 0.2) == split]
        assert want, split
        got = decoded_docs(out, split)
        assert got == want  # exact text, exact order
    assert set(SPECIAL_DOCS.values()) <= set(decoded_docs(out, "train") + decoded_docs(out, "val"))
    meta = read_metadata(out)
    assert meta["vocab_size"] == 400 and meta["dtype"] == "uint16" and meta["eos_id"] == 2
    assert (meta["bos_id"], meta["pad_id"]) == (1, 3)
    assert meta["non_utf8"] == {"policy": "replace", "documents": 0}
    assert meta["documents"] == len(texts)


def test_other_source_kinds_give_the_same_documents(prepped):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp, docs, out = prepped
    texts = [docs[k] for k in walk_order(docs)]
    (tmp / "c.jsonl").write_text("".join(json.dumps({"content": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    with gzip.open(tmp / "c.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps({"content": t}) + "\n" for t in texts))
    pq.write_table(pa.table({"body": texts}), tmp / "c.parquet", row_group_size=7)
    datasets.Dataset.from_dict({"body": texts}).save_to_disk(str(tmp / "hfds"))
    cases = [(tmp / "c.jsonl", ["--text-key", "content"]), (tmp / "c.jsonl.gz", ["--text-key", "content"]),
             (tmp / "c.parquet", ["--text-column", "body"]), (f"hf:{tmp / 'hfds'}", ["--text-column", "body"])]
    for i, (src, extra) in enumerate(cases):
        o = tmp / f"o{i}"
        assert main([str(src), "--out", str(o), "--tokenizer", str(out / "tokenizer.model"), "--val-fraction",
                     "0.2", "--workers", "1", "--no-progress", *extra]) == 0
        for split in ("train", "val"):
            assert decoded_docs(o, split) == [t for t in texts if expected_split(t, 0.2) == split], (src, split)
        # Same documents and tokenizer -> the same shard bytes as the directory source.
        for split in ("train", "val"):
            for shard in read_metadata(o)["splits"][split]["shards"]:
                for ext in (".bin", ".idx"):
                    assert (o / f"{shard['name']}{ext}").read_bytes() == (out / f"{shard['name']}{ext}").read_bytes()


def test_non_utf8_replaced_and_counted(tmp_path, capsys):
    root = tmp_path / "c"
    make_corpus(root, n_files=20, special=False)
    bad = b"ok line\n\xff\xfe bad bytes \xc3( here\n"
    (root / "bad.txt").write_bytes(bad)
    out = tmp_path / "out"
    assert main([str(root), "--out", str(out), "--val-fraction", "0", "--workers", "1", *PREP]) == 0
    meta = read_metadata(out)
    assert meta["non_utf8"] == {"policy": "replace", "documents": 1}
    assert "non-UTF-8 documents (decoded with replacement characters): 1" in capsys.readouterr().out
    assert decoded_docs(out, "train")[0] == bad.decode("utf-8", errors="replace")


def test_weights_repeat_and_subsample(tmp_path):
    root = tmp_path / "c"
    docs = make_corpus(root, n_files=30, special=False)
    out = tmp_path / "out"
    assert main([f"{root}@2", f"{root}@0.5", "--out", str(out), "--val-fraction", "0", *PREP]) == 0
    got = decoded_docs(out, "train")
    texts = [docs[k] for k in walk_order(docs)]
    assert got[: 2 * len(texts)] == texts + texts
    tail = got[2 * len(texts):]
    assert 0 < len(tail) < len(texts) and all(t in texts for t in tail)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_tiny_corpus_still_has_a_val_document(tmp_path, workers):
    root = tmp_path / "c"
    make_corpus(root, n_files=3, special=False)
    out = tmp_path / "out"
    assert main([str(root), "--out", str(out), "--val-fraction", "0.0001", "--workers", workers, *PREP]) == 0
    meta = read_metadata(out)
    assert meta["val_fallback"] is True and meta["splits"]["val"]["documents"] == 1
    assert meta["splits"]["train"]["documents"] == 3
    assert decoded_docs(out, "val")[0] in decoded_docs(out, "train")
    ds = IndexedDataset(out / "val_00000")
    assert ds.dtype == np.uint16
