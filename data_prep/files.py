"""Which files of a directory are documents, and an account of every file that is not.

A directory once gave only files with a known extension; extension-less text and compressed files were dropped
without a word. Now every file is either read or tallied under a reason (with its extension), and text is
recognised by content: a file is text unless its first 8 KiB hold a NUL byte or many control bytes.
Compressed files (.gz, .bz2, .xz; .zst when the `zstandard` module is importable) are decompressed first and
judged by their decompressed content (`notes.txt.gz`, `LICENSE.gz`, `docs.jsonl.gz`).
"""
from __future__ import annotations

import bz2
import gzip
import importlib.util
import lzma
import os
from collections import Counter
from dataclasses import dataclass, field

from mythos.errors import UserError

JSONL_EXTS = (".jsonl", ".ndjson", ".json")  # .json only when compressed (.json.gz: one object per line)
PARQUET_EXTS = (".parquet",)
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
ARCHIVES = (".tar", ".tgz", ".tbz2", ".txz", ".zip", ".7z", ".rar", ".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst")
SKIP_DIRS = {"__pycache__", "site-packages", "dist-packages", "node_modules"}
SNIFF_BYTES = 8192
CONTROL_SHARE = 0.05  # more control bytes (other than \t \n \r \f \v \b ESC) than this: binary
ACCEPTED = ("text files of any extension, recognised by content (binary files are counted and skipped); "
            ".jsonl/.ndjson (field --text-key, or FILE:KEY); .parquet (column --text-column, or FILE:COLUMN); "
            "any of these compressed as .gz, .bz2, .xz or .zst (.zst needs the zstandard module)")

EXPECTED = "expected text, JSONL or Parquet, optionally compressed as .gz/.bz2/.xz/.zst"
R_HIDDEN = "hidden (name starts with '.')"
R_CACHE = "in a cache/package directory (" + ", ".join(sorted(SKIP_DIRS)) + ")"
R_EMPTY = "empty file"
R_BINARY = "binary content"
R_ARCHIVE = "archive (unpack it first)"
R_ZSTD = "zstd-compressed, but the zstandard module is not installed (pip install zstandard)"
R_CORRUPT = "corrupt compressed data"
R_LINKDIR = "symlink to a directory (not followed; pass its target as a SOURCE)"


def has_zstd() -> bool:
    return importlib.util.find_spec("zstandard") is not None


def ext_of(name: str) -> str:
    """The extension a tally shows: '.txt', '.txt.gz', '.gz' (no inner one) or '(none)'."""
    stem, ext = os.path.splitext(name.lower())
    if ext in COMPRESSED:
        inner = os.path.splitext(stem)[1]
        return inner + ext if 1 < len(inner) <= 9 else ext
    return ext or "(none)"


def strip_compression(name: str) -> tuple[str, str | None]:
    """('a.jsonl', '.gz') for 'a.jsonl.gz'; (name, None) for an uncompressed name."""
    stem, ext = os.path.splitext(name)
    return (stem, ext.lower()) if ext.lower() in COMPRESSED else (name, None)


def file_kind(path: str) -> tuple[str, str | None]:
    """(kind, skip reason or None) from the name: kind is jsonl | parquet | text (text: judged by content)."""
    low = os.path.basename(path).lower()
    if low.endswith(ARCHIVES):
        return "archive", R_ARCHIVE
    inner, comp = strip_compression(low)
    if comp == ".zst" and not has_zstd():
        return "text", R_ZSTD
    if inner.endswith(JSONL_EXTS) and (comp or not inner.endswith(".json")):
        return "jsonl", None
    if inner.endswith(PARQUET_EXTS) and not comp:
        return "parquet", None
    return "text", None


def open_binary(path: str):
    """A binary file object, decompressing by the name's suffix."""
    comp = strip_compression(path)[1]
    if comp == ".gz":
        return gzip.open(path, "rb")
    if comp == ".bz2":
        return bz2.open(path, "rb")
    if comp == ".xz":
        return lzma.open(path, "rb")
    if comp == ".zst":
        if not has_zstd():
            raise UserError(f"{path}: {R_ZSTD}")
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


def read_all(path: str) -> bytes:
    """The file's (decompressed) bytes; UserError naming the file when it cannot be read or decompressed."""
    try:
        with open_binary(path) as f:
            return f.read()
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise UserError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    except Exception as e:  # zstandard.ZstdError and friends
        raise UserError(f"{path}: cannot read ({type(e).__name__}: {e})") from None


def looks_like_text(head: bytes) -> bool:
    """No NUL byte and few control bytes in the first SNIFF_BYTES (UTF-8, Latin-1 etc. all pass)."""
    head = head[:SNIFF_BYTES]
    if b"\x00" in head:
        return False
    if not head:
        return True
    ctrl = head.translate(None, bytes(range(32, 256)) + b"\t\n\r\f\v\b\x1b")
    return len(ctrl) / len(head) <= CONTROL_SHARE


def _top(counter: Counter, n: int) -> dict:
    return dict(counter.most_common(n))


@dataclass
class FileTally:
    """Every file a directory walk met: read (by extension) or skipped (by reason, by extension)."""
    read: Counter = field(default_factory=Counter)
    skipped: dict = field(default_factory=dict)  # reason -> Counter(ext)

    def add_read(self, path: str) -> None:
        self.read[ext_of(os.path.basename(path))] += 1

    def add_skip(self, path: str, reason: str) -> None:
        self.skipped.setdefault(reason, Counter())[ext_of(os.path.basename(path))] += 1

    @property
    def n_read(self) -> int:
        return sum(self.read.values())

    @property
    def n_skipped(self) -> int:
        return sum(sum(c.values()) for c in self.skipped.values())

    def to_json(self) -> dict:
        return {"read": self.n_read, "skipped": self.n_skipped, "read_extensions": _top(self.read, 10),
                "skipped_reasons": {r: {"files": sum(c.values()), "extensions": _top(c, 5)}
                                    for r, c in sorted(self.skipped.items(), key=lambda kv: -sum(kv[1].values()))}}

    def summary(self) -> str:
        """One line: 'files: 12 read (.txt 8, (none) 4); 3 skipped: binary content 2 (.png 2); empty file 1 (...)'."""
        def exts(c: Counter, n: int) -> str:
            return ", ".join(f"{e} {k}" for e, k in c.most_common(n))
        line = f"files: {self.n_read} read" + (f" ({exts(self.read, 5)})" if self.read else "")
        line += f"; {self.n_skipped} skipped"
        if self.skipped:
            line += ": " + "; ".join(f"{r} {sum(c.values())} ({exts(c, 3)})"
                                     for r, c in sorted(self.skipped.items(), key=lambda kv: -sum(kv[1].values())))
        return line


def walk(root: str, tally: FileTally | None):
    """Files under root in sorted order with their kind; the others go to `tally` with their reason."""
    for dirpath, dirnames, filenames in os.walk(root):
        keep = []
        for d in sorted(dirnames):
            reason = R_HIDDEN if d.startswith(".") else R_CACHE if d in SKIP_DIRS else None
            if reason is None and os.path.islink(os.path.join(dirpath, d)):
                if tally is not None:
                    tally.add_skip(os.path.join(dirpath, d), R_LINKDIR)
                continue
            if reason is None:
                keep.append(d)
            elif tally is not None:  # account for what we do not descend into
                for sub, _, names in os.walk(os.path.join(dirpath, d)):
                    for n in names:
                        tally.add_skip(os.path.join(sub, n), reason)
        dirnames[:] = keep
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            kind, reason = file_kind(name)
            if reason is None and name.startswith("."):
                reason = R_HIDDEN
            if reason is None and _is_empty(path):
                reason = R_EMPTY
            if reason is not None:
                if tally is not None:
                    tally.add_skip(path, reason)
                continue
            yield path, kind


def _is_empty(path: str) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False  # reading it reports the problem


def read_text_doc(path: str, tally: FileTally | None, single: bool) -> bytes | None:
    """A text file's (decompressed) bytes, or None when its content is not text / is empty / is corrupt (tallied).
    Given singly (`single`), such a file is a UserError instead."""
    try:
        data = read_all(path)
    except UserError:
        if single or strip_compression(path)[1] is None:
            raise
        return _skip(path, R_CORRUPT, tally, single)
    if not data:
        return _skip(path, R_EMPTY, tally, single)
    if not looks_like_text(data):
        return _skip(path, R_BINARY, tally, single)
    if tally is not None:
        tally.add_read(path)
    return data


def _skip(path: str, reason: str, tally: FileTally | None, single: bool) -> None:
    if single and reason != R_EMPTY:
        raise UserError(f"{path}: {reason} ({EXPECTED})")
    if tally is not None:
        tally.add_skip(path, reason)
    return None

