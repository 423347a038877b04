"""Bad input -> one line `error: <file>: <problem>`, exit code 2, no traceback (the real CLI, as a subprocess)."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.data.datahelp import assert_user_error, make_corpus, run_cli

FAST = ["--vocab-size", "300", "--sample-mb", "0.5", "--workers", "1", "--no-progress"]


@pytest.fixture(scope="module")
def prepped(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("errs")
    make_corpus(tmp / "corpus", n_files=20, special=False)
    r = run_cli(tmp / "corpus", "--out", tmp / "out", "--val-fraction", "0.2", *FAST)
    assert r.returncode == 0, r.stderr
    return tmp


def copy(prepped, tmp_path):
    return shutil.copytree(prepped / "out", tmp_path / "d")


def test_inspect_good_dir(prepped):
    r = run_cli("inspect", prepped / "out", "--model-vocab", "300")
    assert r.returncode == 0, r.stderr
    assert "vocab 300" in r.stdout and "uint16" in r.stdout and "train: 1 shards" in r.stdout
    assert "sample (first" in r.stdout and "state" in r.stdout


def test_empty_corpus(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "empty.txt").write_text("")
    assert_user_error(run_cli(tmp_path / "c", "--out", tmp_path / "o", *FAST), f"{tmp_path / 'c'}", "empty corpus")
    assert not (tmp_path / "o").exists()


def test_missing_path(tmp_path):
    assert_user_error(run_cli(tmp_path / "nope", "--out", tmp_path / "o", *FAST),
                      f"{tmp_path / 'nope'}: no such file or directory")


def test_truncated_bin(prepped, tmp_path):
    d = copy(prepped, tmp_path)
    b = d / "train_00000.bin"
    b.write_bytes(b.read_bytes()[:-1])
    assert_user_error(run_cli("inspect", d), f"{b}: ", "truncated")


def test_idx_with_wrong_magic(prepped, tmp_path):
    d = copy(prepped, tmp_path)
    i = d / "val_00000.idx"
    i.write_bytes(b"XXXXXXXXX" + i.read_bytes()[9:])
    assert_user_error(run_cli("inspect", d), f"{i}: wrong magic")


def test_vocab_too_large_for_dtype(prepped, tmp_path):
    assert_user_error(run_cli(prepped / "corpus", "--out", tmp_path / "o", "--vocab-size", "70000", "--dtype",
                              "uint16"), "--vocab-size 70000: too large for dtype uint16")
    d = copy(prepped, tmp_path)
    m = json.loads((d / "metadata.json").read_text())
    m["vocab_size"] = 70000
    (d / "metadata.json").write_text(json.dumps(m))
    assert_user_error(run_cli("inspect", d), f"{d / 'metadata.json'}: vocab_size 70000 is too large for dtype uint16")


def test_shard_vocab_differs_from_model(prepped):
    assert_user_error(run_cli("inspect", prepped / "out", "--model-vocab", "8000"),
                      f"{prepped / 'out' / 'metadata.json'}: vocab_size 300 differs from the model's 8000")


def test_existing_dir_needs_overwrite(prepped, tmp_path):
    d = copy(prepped, tmp_path)
    args = [prepped / "corpus", "--out", d, "--val-fraction", "0.2", *FAST]
    assert_user_error(run_cli(*args), f"{d}: already holds a finished prep", "--overwrite")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    assert_user_error(run_cli(prepped / "corpus", "--out", tmp_path / "other", *FAST), "not empty")
    before = (d / "train_00000.bin").read_bytes()
    r = run_cli(*args, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert (d / "train_00000.bin").read_bytes() == before  # deterministic: same bytes again


def test_unfinished_prep_with_other_arguments(prepped, tmp_path):
    d = copy(prepped, tmp_path)
    (d / "metadata.json").unlink()
    (d / "prep.json").write_text(json.dumps({"val_fraction": 0.5}))
    assert_user_error(run_cli(prepped / "corpus", "--out", d, "--val-fraction", "0.2", *FAST),
                      f"{d}: holds an unfinished prep with different arguments", "val_fraction")


def test_bad_jsonl_and_tokenizer(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "fine"}\n{"body": "no text key"}\n')
    assert_user_error(run_cli(tmp_path / "a.jsonl", "--out", tmp_path / "o", *FAST),
                      f"{tmp_path / 'a.jsonl'}:2: no key 'text'")
    (tmp_path / "b.jsonl").write_text('{"text": "fine"}\n{not json\n')
    assert_user_error(run_cli(tmp_path / "b.jsonl", "--out", tmp_path / "o", *FAST), "b.jsonl:2: invalid JSON")
    (tmp_path / "t.model").write_bytes(b"not a model")
    assert_user_error(run_cli(tmp_path / "a.jsonl", "--out", tmp_path / "o", "--tokenizer", tmp_path / "t.model"),
                      f"{tmp_path / 't.model'}: not a SentencePiece model")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.txt").write_text("tiny")
    assert_user_error(run_cli(tmp_path / "c", "--out", tmp_path / "o2", "--vocab-size", "100"),
                      "--vocab-size 100: too small")
