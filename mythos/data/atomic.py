"""The one way a file is written in place: into `NAME.tmp` beside it, then `os.replace` onto the name, so a reader
(or a run killed midway) sees the old file or the new one, never half of one. In mythos.data, the lowest package
that writes files, so every layer (data_prep included) uses the same helper.

    atomic_write(path, text_or_bytes)                 # small files: metadata, manifests, pointers
    with atomic_path(path, fsync=True) as tmp: ...    # a writer that wants a path (safetensors, SentencePiece)
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


def tmp_path(path: str | Path) -> Path:
    """Where `path` is written before it is moved into place."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def replace_atomically(tmp: str | Path, path: str | Path, fsync: bool = False) -> None:
    """Move a finished `tmp` onto `path` (fsync first: the data reaches the disk before the name does)."""
    if fsync:
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = False) -> Iterator[Path]:
    """Yield the temporary path to write; on success it replaces `path`, on an exception it is removed."""
    tmp = tmp_path(path)
    try:
        yield tmp
        replace_atomically(tmp, path, fsync)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: str | bytes, fsync: bool = False) -> None:
    """Write `data` (text or bytes) to `path` atomically."""
    with atomic_path(path, fsync) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
