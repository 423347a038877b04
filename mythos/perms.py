"""Give files we write the permissions the user's umask asks for.

safetensors writes 0600 files and `tempfile.mkdtemp` makes 0700 directories: an export made on a shared cluster
filesystem with umask 022 was readable by its owner only. Exports are chmod-ed to 0666 & ~umask (files) and
0777 & ~umask (directories) before they are moved into place.
"""
from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process umask, read from /proc (no race with threads); else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | Path) -> None:
    """chmod `path` (and everything under it, if a directory) to what a plain open()/mkdir() would have made."""
    mask = current_umask()
    path = Path(path)
    targets = [path] + (sorted(path.rglob("*")) if path.is_dir() else [])
    for p in targets:
        if p.is_symlink():
            continue
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)
