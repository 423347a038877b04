"""The .idx/.bin bytes follow the spec (checked by a reader written here from the spec alone) and the reader
rejects corrupt files with a UserError naming the file."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from mythos.data import IndexedDataset, IndexedWriter
from mythos.errors import UserError


def spec_read(prefix):
    """Design note §2: magic, <Q version=1, <B dtype code (8=uint16, 4=int32), <Q seq count, <Q doc count
    (= seq + 1), int32[seq] lengths, int64[seq] byte offsets, int64[seq+1] document indices from 0."""
    raw = open(f"{prefix}.idx", "rb").read()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    version, code, n_seq, n_doc = struct.unpack("<QBQQ", raw[9:34])
    assert version == 1 and n_doc == n_seq + 1
    itemsize, fmt = {8: (2, "H"), 4: (4, "i")}[code]
    pos = 34
    lengths = struct.unpack(f"<{n_seq}i", raw[pos: pos + 4 * n_seq]); pos += 4 * n_seq
    offsets = struct.unpack(f"<{n_seq}q", raw[pos: pos + 8 * n_seq]); pos += 8 * n_seq
    doc_idx = struct.unpack(f"<{n_doc}q", raw[pos: pos + 8 * n_doc]); pos += 8 * n_doc
    assert pos == len(raw), "no trailing bytes"
    assert list(doc_idx) == list(range(n_seq + 1))
    data = open(f"{prefix}.bin", "rb").read()
    assert len(data) == sum(lengths) * itemsize
    docs = []
    for n, off in zip(lengths, offsets):
        docs.append(list(struct.unpack(f"<{n}{fmt}", data[off: off + n * itemsize])))
    return code, docs


@pytest.mark.parametrize("dtype,code,big", [("uint16", 8, 65535), ("int32", 4, 2**31 - 1)])
def test_writer_bytes_follow_the_spec(tmp_path, dtype, code, big):
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 1000, size=n).tolist() + [2] for n in (5, 0, 17, 1, 300)] + [[big, 0, 2]]
    w = IndexedWriter(tmp_path / "s", dtype)
    w.add_document(docs[0])
    w.add_documents(np.concatenate([np.asarray(d) for d in docs[1:]]), np.array([len(d) for d in docs[1:]]))
    assert not (tmp_path / "s.idx").exists() and (tmp_path / "s.bin.tmp").exists()
    w.finalize()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.bin", "s.idx"]
    got_code, got = spec_read(tmp_path / "s")
    assert got_code == code and got == docs
    ds = IndexedDataset(tmp_path / "s")
    assert ds.dtype == np.dtype(dtype) and len(ds) == len(docs)
    assert [ds[i].tolist() for i in range(len(ds))] == docs
    assert ds.tokens.tolist() == sum(docs, [])


def _shard(tmp_path):
    w = IndexedWriter(tmp_path / "s", "uint16")
    for n in (10, 20, 30):
        w.add_document(np.arange(n))
    w.finalize()
    return tmp_path / "s"


def test_reader_rejects_truncated_bin(tmp_path):
    p = _shard(tmp_path)
    data = (tmp_path / "s.bin").read_bytes()
    (tmp_path / "s.bin").write_bytes(data[:-3])
    with pytest.raises(UserError, match=r"s\.bin: 117 bytes.*120 bytes"):
        IndexedDataset(p)


def test_reader_rejects_wrong_magic_version_dtype_and_short_idx(tmp_path):
    p = _shard(tmp_path)
    good = (tmp_path / "s.idx").read_bytes()
    cases = [(b"NOTMAGIC!" + good[9:], r"s\.idx: wrong magic"),
             (good[:9] + struct.pack("<Q", 2) + good[17:], r"s\.idx: version 2"),
             (good[:17] + bytes([9]) + good[18:], r"s\.idx: unknown or non-integer dtype code 9"),
             (good[:17] + bytes([6]) + good[18:], r"dtype code 6"),
             (good[:-8], r"s\.idx: \d+ bytes, but its header"),
             (good[:20], r"s\.idx: truncated header")]
    for bad, pattern in cases:
        (tmp_path / "s.idx").write_bytes(bad)
        with pytest.raises(UserError, match=pattern):
            IndexedDataset(p)


def test_reader_missing_files(tmp_path):
    with pytest.raises(UserError, match=r"nope\.idx: no such file"):
        IndexedDataset(tmp_path / "nope")
