"""Sharded prep (`--tokenizer-only`, `--num-shards N --shard-index I`, `merge`) equals a single-process prep of
the same corpus as a multiset of documents, token for token, in each split; the tiny-corpus val fallback too."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from data_prep.cli import main
from mythos.data import IndexedDataset, read_metadata
from tests.conftest import make_corpus

PREP = ["--no-progress", "--workers", "1"]


def documents(out: Path, split: str) -> Counter:
    meta = read_metadata(out)
    return Counter(tuple(IndexedDataset(out / s["name"])[i].tolist())
                   for s in meta["splits"][split]["shards"] for i in range(s["documents"]))


def sharded_prep(src: Path, out: Path, n: int, *args: str) -> None:
    assert main([str(src), "--out", str(out), "--tokenizer-only", "--vocab-size", "300", *PREP]) == 0
    for i in range(n):
        assert main([str(src), "--out", str(out), "--num-shards", str(n), "--shard-index", str(i), *args,
                     *PREP]) == 0
    assert main(["merge", str(out)]) == 0


@pytest.mark.parametrize("val_fraction,floor", [("0.15", "0"), ("0.0001", "0"), ("0.0001", "20000")])
def test_sharded_equals_single_process(tmp_path, val_fraction, floor):
    """0.0001 without a floor: no document hashes into val (the fallback); with the token floor: val is raised the
    same way in every part."""
    src = make_corpus(tmp_path, n_files=20)
    val = ["--val-fraction", val_fraction, "--val-min-tokens", floor]
    sharded_prep(src, tmp_path / "sharded", 3, *val, "--shard-tokens", "3000")
    single = tmp_path / "single"
    assert main([str(src), "--out", str(single), "--tokenizer", str(tmp_path / "sharded" / "tokenizer.model"),
                 *val, *PREP]) == 0
    merged, ref = read_metadata(tmp_path / "sharded"), read_metadata(single)
    for split in ("train", "val"):
        assert documents(tmp_path / "sharded", split) == documents(single, split)
        assert merged["splits"][split]["tokens"] == ref["splits"][split]["tokens"]
    assert merged["val_fallback"] == ref["val_fallback"] == (val_fraction == "0.0001" and floor == "0")
    assert merged["val_floor_applied"] == ref["val_floor_applied"] == (floor != "0" and val_fraction == "0.0001")
    assert merged["splits"]["val"]["documents"] > (1 if floor != "0" else 0)
    assert merged["tokenizer"]["sha256"] == ref["tokenizer"]["sha256"]
    # no data copied: every shard lives in its part directory
    assert all(s["name"].startswith("part-") for sp in merged["splits"].values() for s in sp["shards"])
    assert not list((tmp_path / "sharded").glob("*.bin"))


def test_shard_without_tokenizer_and_incomplete_merge_are_errors(tmp_path, capsys):
    src = make_corpus(tmp_path, n_files=4)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main([str(src), "--out", str(out), "--num-shards", "2", "--shard-index", "0", *PREP])
    assert e.value.code == 2 and "--tokenizer-only" in capsys.readouterr().err
    assert main([str(src), "--out", str(out), "--tokenizer-only", "--vocab-size", "300", *PREP]) == 0
    assert main([str(src), "--out", str(out), "--num-shards", "2", "--shard-index", "1", *PREP]) == 0
    with pytest.raises(SystemExit) as e:
        main(["merge", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "part-00000-of-00002" in err and len(err.strip().splitlines()) == 1
    assert not (out / "metadata.json").exists()
    with pytest.raises(SystemExit) as e:
        main([str(src), "--out", str(out), "--num-shards", "2", "--shard-index", "2", *PREP])
    assert e.value.code == 2
