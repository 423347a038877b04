"""Documents from every source kind, streamed in a deterministic order.

Kinds: a directory (walked in sorted order; every file read or tallied as skipped with its reason, text recognised
by content, compressed files decompressed: data_prep/files.py), a single text / JSONL / Parquet file (compressed
too), `hf:NAME[:CONFIG][:SPLIT]` through `datasets`, and `stdlib` (the running Python's standard-library .py files:
the embedded default corpus). `SOURCE@WEIGHT` rescales a source at prep time; `FILE:KEY` (or `DIR:KEY`) names the
JSONL field / Parquet column of that source only, so one blend can mix files with different keys.

Non-UTF-8 policy: bytes that are not valid UTF-8 are decoded with errors="replace" (each bad sequence becomes
U+FFFD); the affected documents are counted (Stats.non_utf8_docs) and reported. Empty documents are skipped
(counted). Every document is yielded as (text, its UTF-8 bytes).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from data_prep import files as F
from mythos.data.loader import split_weight
from mythos.errors import UserError

SKIP_DIRS = F.SKIP_DIRS


@dataclass
class Source:
    spec: str  # as given on the command line
    kind: str  # stdlib | dir | text | jsonl | parquet | hf
    target: str  # path or dataset name
    weight: float = 1.0
    config: str | None = None
    split: str | None = None
    text_key: str | None = None  # FILE:KEY: this source's JSONL field / Parquet column (else the global option)


@dataclass
class Stats:
    docs: int = 0
    bytes: int = 0
    non_utf8_docs: int = 0
    empty_docs: int = 0
    per_source: dict = field(default_factory=dict)
    files: F.FileTally = field(default_factory=F.FileTally)  # every file of the file sources: read or skipped


@dataclass
class ReadOptions:
    text_key: str = "text"
    text_column: str = "text"


def hash_frac(data: bytes, salt: bytes = b"") -> float:
    """A deterministic number in [0, 1) from a document's bytes."""
    h = hashlib.blake2b(data, digest_size=8, key=salt)
    return int.from_bytes(h.digest(), "little") / 2.0**64


def parse_source(spec: str) -> Source:
    body, weight = split_weight(spec)
    if body == "stdlib":
        return Source(spec, "stdlib", sysconfig.get_paths()["stdlib"], weight)
    if body.startswith("hf:"):
        parts = body[3:].split(":")
        if not parts[0] or len(parts) > 3:
            raise UserError(f"{spec}: expected hf:NAME[:CONFIG][:SPLIT]")
        parts += [None] * (3 - len(parts))
        return Source(spec, "hf", parts[0], weight, parts[1] or None, parts[2] or None)
    key = None
    if not Path(body).exists() and ":" in body:  # FILE:KEY
        head, _, tail = body.rpartition(":")
        if Path(head).exists() and tail and "/" not in tail:
            body, key = head, tail
        elif Path(head).exists():
            raise UserError(f"{spec}: expected FILE:KEY[@WEIGHT] with a non-empty KEY")
    p = Path(body)
    if not p.exists():
        raise UserError(f"{body}: no such file or directory")
    if p.is_dir():
        return Source(spec, "dir", body, weight, text_key=key)
    kind, reason = F.file_kind(body)
    if reason is not None:
        raise UserError(f"{body}: {reason} ({F.EXPECTED})")
    if key is not None and kind == "text":
        raise UserError(f"{spec}: a text file has no field to choose; FILE:KEY is for JSONL and Parquet")
    return Source(spec, kind, body, weight, text_key=key)


def decode(data: bytes, stats: Stats | None) -> tuple[str, bytes]:
    try:
        return data.decode("utf-8"), data
    except UnicodeDecodeError:
        if stats is not None:
            stats.non_utf8_docs += 1
        text = data.decode("utf-8", errors="replace")
        return text, text.encode("utf-8")


def from_str(text: str, stats: Stats | None) -> tuple[str, bytes]:
    try:
        return text, text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (e.g. "\ud800" escapes in JSON)
        return decode(text.encode("utf-8", errors="surrogatepass"), stats)


def _walk_py(root: str) -> Iterator[str]:
    """stdlib: its .py files (the embedded corpus; nothing else is a document there)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(".py"):
                yield os.path.join(dirpath, name)


def _read_text_file(path: str, stats: Stats | None, single: bool = False):
    data = F.read_text_doc(path, stats.files if stats is not None else None, single)
    if data is not None:
        yield decode(data, stats)


def _read_plain(path: str, stats: Stats | None):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    yield decode(data, stats)


def _read_jsonl(path: str, key: str, stats: Stats | None):
    try:
        with F.open_binary(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                text, _ = decode(line, stats)
                try:
                    obj = json.loads(text)
                except ValueError as e:
                    raise UserError(f"{path}:{lineno}: invalid JSON ({e})") from None
                if not isinstance(obj, dict) or key not in obj:
                    raise UserError(f"{path}:{lineno}: no key {key!r} (choose it with --text-key, or for this "
                                    f"file alone as {path}:KEY)")
                if not isinstance(obj[key], str):
                    raise UserError(f"{path}:{lineno}: {key!r} is {type(obj[key]).__name__}, expected a string")
                yield from_str(obj[key], stats)
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    if stats is not None:
        stats.files.add_read(path)


def _read_parquet(path: str, column: str, stats: Stats | None):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise UserError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0][:160]})") from None
    if column not in pf.schema_arrow.names:
        raise UserError(f"{path}: no column {column!r} (has {pf.schema_arrow.names}; choose with --text-column, or "
                        f"for this file alone as {path}:COLUMN)")
    if stats is not None:
        stats.files.add_read(path)
    for batch in pf.iter_batches(columns=[column], batch_size=1024):
        for value in batch.column(0).to_pylist():
            if value is None:
                continue
            if isinstance(value, bytes):
                yield decode(value, stats)
            else:
                yield from_str(str(value), stats)


def _read_hf(src: Source, column: str, stats: Stats | None):
    import datasets

    name = src.target
    try:
        if os.path.isdir(name) and (Path(name, "dataset_info.json").exists() or Path(name, "state.json").exists()
                                    or Path(name, "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(name)
        else:
            ds = datasets.load_dataset(name, src.config, split=src.split)
    except Exception as e:  # datasets raises many types (FileNotFoundError, ConnectionError, ValueError...)
        raise UserError(f"{src.spec}: cannot load dataset ({str(e).splitlines()[0][:200]})") from None
    if isinstance(ds, (datasets.DatasetDict, dict)):
        split = src.split or ("train" if "train" in ds else sorted(ds)[0])
        if split not in ds:
            raise UserError(f"{src.spec}: no split {split!r} (has {sorted(ds)})")
        ds = ds[split]
    if column not in ds.column_names:
        raise UserError(f"{src.spec}: no column {column!r} (has {ds.column_names}; choose with --text-column)")
    for start in range(0, len(ds), 1024):
        for value in ds[start: start + 1024][column]:
            if value is not None:
                yield from_str(str(value), stats)


def _file_docs(path: str, kind: str, opts: ReadOptions, stats: Stats | None, single: bool = False):
    if kind == "jsonl":
        return _read_jsonl(path, opts.text_key, stats)
    if kind == "parquet":
        return _read_parquet(path, opts.text_column, stats)
    return _read_text_file(path, stats, single)


def _raw_docs(src: Source, opts: ReadOptions, stats: Stats | None):
    if src.text_key is not None:
        opts = ReadOptions(text_key=src.text_key, text_column=src.text_key)
    if src.kind == "stdlib":
        for path in _walk_py(src.target):
            yield from _read_plain(path, stats)
    elif src.kind == "dir":
        for path, kind in F.walk(src.target, stats.files if stats is not None else None):
            yield from _file_docs(path, kind, opts, stats)
    elif src.kind == "hf":
        yield from _read_hf(src, opts.text_column, stats)
    else:
        yield from _file_docs(src.target, src.kind, opts, stats, single=True)


def iter_source(src: Source, opts: ReadOptions, stats: Stats | None = None) -> Iterator[tuple[str, bytes]]:
    """Documents of one source, repeated/subsampled by its weight: pass p < floor(w) keeps every document, the
    last pass keeps a document when its hash (salted with p) falls below the fractional part of w."""
    whole = math.floor(src.weight)
    frac = src.weight - whole
    passes = whole + (1 if frac > 1e-12 else 0)
    per = stats.per_source.setdefault(src.spec, {"documents": 0, "bytes": 0}) if stats is not None else None
    files_before = (stats.files.n_read, stats.files.n_skipped) if stats is not None else None
    for p in range(passes):
        salt = f"weight-pass-{p}".encode()
        for text, data in _raw_docs(src, opts, stats if p == 0 else None):
            if not text:
                if stats is not None and p == 0:
                    stats.empty_docs += 1
                continue
            if p >= whole and hash_frac(data, salt) >= frac:
                continue
            if per is not None:
                per["documents"] += 1
                per["bytes"] += len(data)
                stats.docs += 1
                stats.bytes += len(data)
            yield text, data
    if per is not None and src.kind not in ("stdlib", "hf"):
        per["files_read"] = stats.files.n_read - files_before[0]
        per["files_skipped"] = stats.files.n_skipped - files_before[1]


def iter_corpus(sources: list[Source], opts: ReadOptions, stats: Stats | None = None):
    """All sources one after another, in command-line order."""
    for src in sources:
        yield from iter_source(src, opts, stats)


def describe(src: Source) -> dict:
    d = {"spec": src.spec, "kind": src.kind, "weight": src.weight}
    if src.kind == "stdlib":
        import sys

        d["python"] = sys.version.split()[0]
        d["path"] = src.target
    elif src.kind == "hf":
        d.update(name=src.target, config=src.config, split=src.split)
    else:
        d["path"] = os.path.abspath(src.target)
    if src.text_key is not None:
        d["text_key"] = src.text_key
    return d
