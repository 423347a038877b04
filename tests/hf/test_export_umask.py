"""Exports get the permissions of the user's umask (not safetensors' 0600 or mkdtemp's 0700), so colleagues on a
shared filesystem can load them; and exporting prints no DeepSpeed accelerator warning."""
from __future__ import annotations

import os
import stat

import pytest

from tests.conftest import run_cli


def modes(path):
    paths = [path] + (sorted(path.rglob("*")) if path.is_dir() else [])
    return {p: stat.S_IMODE(p.stat().st_mode) for p in paths if not p.is_symlink()}


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_exports_follow_the_umask(tiny_run, tmp_path, umask):
    old = os.umask(umask)
    try:
        single = tmp_path / "tiny.safetensors"
        r1 = run_cli(["mythos.hf.export_cli", str(tiny_run), "--out", str(single)])
        hf = tmp_path / "hf" / "tiny"
        r2 = run_cli(["mythos.hf.export_cli", str(tiny_run), "--format", "hf", "--out", str(hf)])
    finally:
        os.umask(old)
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    assert modes(single) == {single: 0o666 & ~umask}
    got = modes(hf)
    assert len(got) > 3
    for p, m in got.items():
        assert m == (0o777 if p.is_dir() else 0o666) & ~umask, (p, oct(m))
    for r in (r1, r2):
        assert "accelerator" not in (r.stdout + r.stderr).lower(), r.stderr
