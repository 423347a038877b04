"""A manifest (`manifest.json`: each file's size and SHA-256) written last into a checkpoint, verified first on load.

Each rank hashes the DCP shards it wrote right after writing them (`hashes_rankNNNNN.json`, page cache warm, all ranks
in parallel); rank 0 merges those, hashes the small files (metadata, trainer state, RNG) and writes the manifest before
the checkpoint is renamed into place. SHA-256 (hashlib, SHA-NI): 1.8 GB/s per core here against 4.2 GB/s for zlib's
crc32; at one shard per rank that is well below what a shared filesystem writes per rank, so the stronger hash is kept.
The manifest detects damage, not tampering (a forger rewrites it too): hostile files are safe_pickle.py's concern.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mythos.data.atomic import atomic_write

MANIFEST = "manifest.json"
FORMAT = "mythos-checkpoint-manifest-v1"
HASH = "sha256"


def file_entry(path: Path) -> dict:
    with open(path, "rb") as f:
        return {"size": os.fstat(f.fileno()).st_size, HASH: hashlib.file_digest(f, HASH).hexdigest()}


def _write_json_atomic(path: Path, obj: dict) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True), fsync=True)


def rank_hashes_file(ckpt_dir: Path, rank: int) -> Path:
    return Path(ckpt_dir) / f"hashes_rank{rank:05d}.json"


def write_rank_hashes(ckpt_dir: Path, rank: int, names: list[str]) -> None:
    _write_json_atomic(rank_hashes_file(ckpt_dir, rank), {n: file_entry(Path(ckpt_dir) / n) for n in names})


def write_manifest(ckpt_dir: Path, step: int) -> None:
    """Rank 0, after every rank's write completed: merge the per-rank hashes, hash the rest, write the manifest."""
    ckpt_dir = Path(ckpt_dir)
    files: dict[str, dict] = {}
    partials = sorted(ckpt_dir.glob("hashes_rank*.json"))
    for p in partials:
        files.update(json.loads(p.read_text()))
    for p in sorted(ckpt_dir.iterdir()):
        if p.is_file() and p.name not in files and p not in partials and p.name != MANIFEST:
            files[p.name] = file_entry(p)
    _write_json_atomic(ckpt_dir / MANIFEST, {"format": FORMAT, "step": step, "hash": HASH, "files": files})
    for p in partials:
        p.unlink()


def verify(ckpt_dir: Path, rank: int = 0, world_size: int = 1,
           required: tuple[str, ...] = ("trainer_state.json", ".metadata")) -> str | None:
    """None if the checkpoint matches its manifest, else one line naming the file and what is wrong. Sizes and the
    file list are checked on every rank; the hashes are split over the ranks (rank r hashes files r, r+W, ...).
    `required`: files the manifest must list (DCP's by default; a DeepSpeed checkpoint has no .metadata)."""
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if manifest.get("format") != FORMAT or manifest.get("hash") != HASH or not isinstance(files, dict):
            return f"{path}: not a {FORMAT} manifest with {HASH} hashes"
        expected = {name: (int(e["size"]), str(e[HASH])) for name, e in files.items()}
    except FileNotFoundError:
        return f"{path}: missing (the save did not complete, or the checkpoint predates manifests)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{path}: unreadable ({type(e).__name__}: {e})"
    present = {p.name for p in ckpt_dir.iterdir() if p.name != MANIFEST}
    for name in sorted(present - set(expected)):
        return f"{ckpt_dir / name}: not listed in the manifest"
    for name in required:
        if name not in expected:
            return f"{path}: does not list {name}"
    for i, (name, (size, digest)) in enumerate(sorted(expected.items())):
        f = ckpt_dir / name
        if name not in present:
            return f"{f}: missing"
        actual = f.stat().st_size
        if actual != size:
            return f"{f}: {actual} bytes, the manifest says {size}"
        if i % world_size == rank and file_entry(f)[HASH] != digest:
            return f"{f}: {HASH} does not match the manifest (the file is damaged)"
    return None
