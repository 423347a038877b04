"""Prep accounts for every file: read (text by content, compressed decoded) or tallied as skipped with its reason."""
from __future__ import annotations

import bz2
import gzip
import json
import lzma

import pytest

from data_prep import files as F
from data_prep.cli import main
from mythos.data import read_metadata
from tests.data.datahelp import assert_user_error, code_text, run_cli
from tests.data.test_roundtrip import decoded_docs

PREP = ["--vocab-size", "300", "--sample-mb", "0.5", "--workers", "1", "--no-progress", "--val-fraction", "0"]


def _texts(n: int) -> list[str]:
    import random
    rng = random.Random(1)
    return [f"document {i} " + code_text(rng, 20) for i in range(n)]


def test_looks_like_text_by_content():
    assert F.looks_like_text("plain ascii\nand more\n".encode())
    assert F.looks_like_text("Grüße, café".encode("latin-1"))  # not UTF-8, still text
    assert F.looks_like_text("日本語".encode())
    assert not F.looks_like_text(b"ELF\x00\x01\x02")
    assert not F.looks_like_text("utf-16 text".encode("utf-16"))  # NUL bytes
    assert not F.looks_like_text(bytes(range(1, 32)) * 10)  # control bytes, no NUL


def test_mixed_directory_every_file_read_or_tallied(tmp_path, capsys):
    t = _texts(6)
    d = tmp_path / "mix"
    (d / "sub").mkdir(parents=True)
    (d / "__pycache__").mkdir()
    (d / ".git").mkdir()
    (d / "notes.txt").write_text(t[0])
    (d / "LICENSE").write_text(t[1])  # text without an extension
    (d / "sub" / "README").write_text(t[2])
    (d / "guide.gz").write_bytes(gzip.compress(("GZ-MARKER " + t[3]).encode()))
    (d / "more.md.bz2").write_bytes(bz2.compress(t[4].encode()))
    (d / "sub" / "x.rst.xz").write_bytes(lzma.compress(t[5].encode()))
    (d / "empty.txt").write_bytes(b"")
    (d / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    (d / "model.bin").write_bytes(bytes(200))
    (d / "packed.gz").write_bytes(gzip.compress(b"\x00\x01\x02" * 100))  # binary inside the gzip
    (d / "bundle.tar.gz").write_bytes(gzip.compress(b"x"))
    (d / "broken.gz").write_bytes(b"\x1f\x8b\x08 not really gzip")
    (d / ".hidden").write_text("secret")
    (d / ".git" / "config").write_text("[core]")
    (d / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\x00" * 10)
    n_files = sum(1 for p in d.rglob("*") if p.is_file())
    (d / "elsewhere").symlink_to(d / "sub")  # a linked directory is not followed, but it is counted

    out = tmp_path / "out"
    assert main([str(d), "--out", str(out), *PREP]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("files:")]
    assert line and line[0].startswith("files: 6 read") and "10 skipped" in line[0], line
    assert "binary content 3" in line[0] and ".png" in line[0], line[0]

    files = read_metadata(out)["files"]
    assert files["read"] == 6 and files["read"] + files["skipped"] == n_files + 1 == 16
    reasons = {r: v["files"] for r, v in files["skipped_reasons"].items()}
    assert reasons == {F.R_BINARY: 3, F.R_EMPTY: 1, F.R_ARCHIVE: 1, F.R_CORRUPT: 1, F.R_HIDDEN: 2, F.R_CACHE: 1,
                       F.R_LINKDIR: 1}
    assert files["skipped_reasons"][F.R_BINARY]["extensions"] == {".png": 1, ".bin": 1, ".gz": 1}
    assert files["read_extensions"]["(none)"] == 2 and files["read_extensions"][".md.bz2"] == 1

    got = decoded_docs(out, "train")
    assert sorted(got) == sorted(t[:3] + ["GZ-MARKER " + t[3]] + t[4:])
    r = run_cli("inspect", out)
    assert r.returncode == 0 and "files: 6 read, 10 skipped (binary content 3;" in r.stdout, r.stdout  # decoded text, not compressed bytes
    assert read_metadata(out)["non_utf8"]["documents"] == 0


def test_single_compressed_files_are_decoded(tmp_path):
    t = _texts(3)
    srcs = [tmp_path / "a.txt.gz", tmp_path / "b.bz2", tmp_path / "c.jsonl.xz"]
    srcs[0].write_bytes(gzip.compress(t[0].encode()))
    srcs[1].write_bytes(bz2.compress(t[1].encode()))
    srcs[2].write_bytes(lzma.compress((json.dumps({"text": t[2]}) + "\n").encode()))
    out = tmp_path / "out"
    assert main([*map(str, srcs), "--out", str(out), *PREP]) == 0
    assert decoded_docs(out, "train") == t
    assert read_metadata(out)["non_utf8"]["documents"] == 0


def test_single_binary_file_is_a_one_line_error(tmp_path):
    (tmp_path / "data.bin").write_bytes(bytes(range(256)))
    line = assert_user_error(run_cli(tmp_path / "data.bin", "--out", tmp_path / "o", *PREP),
                             f"{tmp_path / 'data.bin'}: binary content")
    assert ".gz" in line and "JSONL" in line  # names what is accepted
    assert not (tmp_path / "o").exists()


def test_zst_without_zstandard_is_tallied_or_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(F, "has_zstd", lambda: False)
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text(_texts(1)[0])
    (d / "b.txt.zst").write_bytes(b"\x28\xb5\x2f\xfd whatever")
    assert main([str(d), "--out", str(tmp_path / "o"), *PREP]) == 0
    files = read_metadata(tmp_path / "o")["files"]
    assert files["read"] == 1 and files["skipped_reasons"][F.R_ZSTD] == {"files": 1, "extensions": {".txt.zst": 1}}
    assert "pip install zstandard" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main([str(d / "b.txt.zst"), "--out", str(tmp_path / "o2"), *PREP])
    assert e.value.code == 2
    assert "zstandard" in capsys.readouterr().err


@pytest.mark.skipif(not F.has_zstd(), reason="the zstandard module is not installed")
def test_zst_decoded_when_zstandard_is_installed(tmp_path):
    import zstandard
    t = _texts(1)[0]
    (tmp_path / "a.zst").write_bytes(zstandard.ZstdCompressor().compress(t.encode()))
    assert main([str(tmp_path / "a.zst"), "--out", str(tmp_path / "o"), *PREP]) == 0
    assert decoded_docs(tmp_path / "o", "train") == [t]


def test_blend_with_two_text_keys(tmp_path):
    t = _texts(4)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": x}) + "\n" for x in t[:2]))
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps({"body": x, "text": 5}) + "\n"
                                                                for x in t[2:]).encode()))
    out = tmp_path / "out"
    assert main([f"{tmp_path / 'a.jsonl'}@1", f"{tmp_path / 'b.jsonl.gz'}:body@1", "--out", str(out), *PREP]) == 0
    assert decoded_docs(out, "train") == t
    srcs = read_metadata(out)["sources"]
    assert [s.get("text_key") for s in srcs] == [None, "body"] and [s["documents"] for s in srcs] == [2, 2]


def test_text_key_errors_name_the_file(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    (tmp_path / "a.txt").write_text("hello")
    assert_user_error(run_cli(tmp_path / "a.jsonl", "--out", tmp_path / "o", *PREP),
                      f"{tmp_path / 'a.jsonl'}:1: no key 'text'", f"{tmp_path / 'a.jsonl'}:KEY")
    assert_user_error(run_cli(f"{tmp_path / 'a.txt'}:body", "--out", tmp_path / "o", *PREP),
                      "a text file has no field")


def test_help_lists_the_accepted_inputs():
    r = run_cli("--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for needle in ("recognised by content", ".gz, .bz2, .xz or .zst", "counted as skipped", "SOURCE:KEY",
                   "--val-min-tokens"):
        assert needle in text, needle
