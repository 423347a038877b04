"""Exports get the permissions of the user's umask (not safetensors' 0600 or mkdtemp's 0700), so colleagues on a
shared filesystem can load them; and exporting prints no DeepSpeed accelerator warning."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, made_once

UMASKS = [0o022, 0o027]
# One fresh interpreter runs mythos-export's main for every umask and format (safetensors first, before anything
# has imported DeepSpeed): the umask is read by the export code at write time, so one process shows each umask, and
# its output shows that no export warns about an accelerator.
EXPORTS = """
import os, sys
from mythos.hf.export_cli import main
run, out = sys.argv[1:]
for umask in ({umasks}):
    os.umask(umask)
    os.makedirs(f"{{out}}/{{umask}}")
    assert main([run, "--out", f"{{out}}/{{umask}}/tiny.safetensors"]) == 0
    assert main([run, "--format", "hf", "--out", f"{{out}}/{{umask}}/hf/tiny"]) == 0
""".format(umasks=", ".join(map(str, UMASKS)))


@pytest.fixture(scope="module")
def exports(tiny_run, tmp_path_factory, worker_id) -> tuple[Path, int, str]:
    """(directory of the exports, exit code, stdout + stderr) of that process, made once per test run."""
    def make(d: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        r = subprocess.run([sys.executable, "-c", EXPORTS, str(tiny_run), str(d)], capture_output=True, text=True,
                           env=env, cwd=REPO, timeout=600)
        (d / "output.txt").write_text(f"{r.returncode}\n{r.stdout}{r.stderr}")

    d = made_once(tmp_path_factory, worker_id, "umask_exports", make)
    rc, _, out = (d / "output.txt").read_text().partition("\n")
    return d, int(rc), out


def modes(path):
    paths = [path] + (sorted(path.rglob("*")) if path.is_dir() else [])
    return {p: stat.S_IMODE(p.stat().st_mode) for p in paths if not p.is_symlink()}


@pytest.mark.slow
@pytest.mark.parametrize("umask", UMASKS)
def test_exports_follow_the_umask(exports, umask):
    d, rc, out = exports
    assert rc == 0, out
    single = d / str(umask) / "tiny.safetensors"
    hf = d / str(umask) / "hf" / "tiny"
    assert modes(single) == {single: 0o666 & ~umask}
    got = modes(hf)
    assert len(got) > 3
    for p, m in got.items():
        assert m == (0o777 if p.is_dir() else 0o666) & ~umask, (p, oct(m))
    assert "accelerator" not in out.lower(), out
