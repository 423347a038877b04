"""Read DCP checkpoints without running code from the files.

torch 2.13's `FileSystemReader.read_metadata` unpickles `.metadata` with plain `pickle.load`, and
`DefaultLoadPlanner.load_bytes` reads non-tensor entries (optimizer param groups) with `torch.load(weights_only=False)`:
a run directory from someone else could execute anything. Both are replaced here through DCP's public extension points
(a `StorageReader` subclass and a `LoadPlanner` subclass passed to `dcp.load`): `.metadata` goes through an unpickler
that admits only DCP's own metadata types, byte entries through `weights_only=True`, and every storage file the
metadata names must be a plain file name inside the checkpoint directory.
"""
from __future__ import annotations

import dataclasses
import enum
import io
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint.filesystem as dcp_fs
import torch.distributed.checkpoint.metadata as dcp_md
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader

from mythos.errors import UserError

METADATA_FILE = ".metadata"
try:  # two private names DCP's metadata pickles refer to; pinned to torch 2.13 (tests/train/test_checkpoint_integrity)
    _STORAGE_INFO, _GET_LAYOUT = dcp_fs._StorageInfo, torch.serialization._get_layout
except AttributeError as e:
    raise ImportError(f"mythos.checkpoint.safe_pickle is written for torch 2.13's DCP metadata types; torch "
                      f"{torch.__version__} lacks one ({e})") from None


class UnsafeCheckpoint(UserError):
    """A checkpoint file asked to run code or to read outside its directory: refused, never a fallback."""


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {}
    for name, obj in vars(dcp_md).items():  # DCP's metadata dataclasses and enums (Metadata, TensorProperties, ...)
        if isinstance(obj, type) and obj.__module__ == dcp_md.__name__ and (
                dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum)):
            allowed[(dcp_md.__name__, name)] = obj
    allowed[(dcp_fs.__name__, "_StorageInfo")] = _STORAGE_INFO  # the per-item file/offset/length record
    allowed[("torch", "Size")] = torch.Size
    for name, obj in vars(torch).items():
        if isinstance(obj, torch.dtype):
            allowed[("torch", name)] = obj
    allowed[("torch.serialization", "_get_layout")] = _GET_LAYOUT  # str -> torch.layout
    allowed[("pathlib", "PosixPath")] = Path  # StorageMeta.checkpoint_id
    allowed[("pathlib", "PurePosixPath")] = Path
    allowed[("collections", "OrderedDict")] = dict
    return allowed


class _MetadataUnpickler(pickle.Unpickler):
    allowed = _allowed_globals()

    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        obj = self.allowed.get((module, name))
        if obj is None:
            raise UnsafeCheckpoint(f"{self.path}: refused: it asks to load {module}.{name}, which is not a DCP "
                                   f"metadata type (loading it could run code from the file)")
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpoint(f"{self.path}: refused: unexpected persistent id in DCP metadata")


def load_metadata(path: Path) -> dcp_md.Metadata:
    """`.metadata` through the restricted unpickler, checked to be a Metadata whose files stay in the directory."""
    try:
        with open(path, "rb") as f:
            md = _MetadataUnpickler(f, path).load()
    except UnsafeCheckpoint:
        raise
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated or garbled: damaged, not hostile
        raise ValueError(f"{path}: unreadable DCP metadata ({type(e).__name__}: {e})") from None
    if not isinstance(md, dcp_md.Metadata):
        raise UnsafeCheckpoint(f"{path}: refused: holds a {type(md).__name__}, not DCP Metadata")
    for info in (md.storage_data or {}).values():
        name = getattr(info, "relative_path", None)
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
            raise UnsafeCheckpoint(f"{path}: refused: storage file {name!r} is not a file in the checkpoint directory")
    return md


class SafeFileSystemReader(FileSystemReader):
    """FileSystemReader whose metadata read never runs code (see the module docstring). Call `check()` before
    `dcp.load`: DCP itself turns a failed metadata read into a logged traceback and an AssertionError."""

    def check(self) -> "SafeFileSystemReader":
        self._metadata = load_metadata(Path(self.path) / METADATA_FILE)
        return self

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_md.Metadata:
        md = getattr(self, "_metadata", None) or load_metadata(Path(self.path) / METADATA_FILE)
        if getattr(md, "storage_meta", None) is None:
            md.storage_meta = dcp_md.StorageMeta()
        md.storage_meta.load_id = self.load_id
        return md


class SafeLoadPlanner(DefaultLoadPlanner):
    """Byte entries are unpickled with weights_only=True, re-serialized by us, then handed to the default planner,
    so the default's `weights_only=False` load only ever sees bytes this process wrote from plain values."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        try:
            obj = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpoint(f"checkpoint entry {read_item.dest_index.fqn}: refused by weights_only "
                                   f"unpickling ({str(e).splitlines()[0]})") from None
        clean = io.BytesIO()
        torch.save(obj, clean)
        clean.seek(0)
        super().load_bytes(read_item, clean)
