"""`make test` runs pytest with the Makefile's flags (pytest-xdist): a test that crashes the interpreter is reported as
that test's failure and the tests after it still run (before, one segfault ended the whole suite silently)."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys

from tests.conftest import REPO

CRASHING = '''
import os, signal

def test_before():
    assert True

def test_segfaults():
    os.kill(os.getpid(), signal.SIGSEGV)

def test_after_1():
    assert True

def test_after_2():
    assert True
'''


def make_test_flags() -> list[str]:
    """The pytest options of the Makefile's main test run (its first `$(PYTEST) ... tests` line, paths dropped)."""
    m = re.search(r"^\t\$\(PYTEST\) (.*) tests \|\|", (REPO / "Makefile").read_text(), re.M)
    assert m, "Makefile: no `$(PYTEST) ... tests ||` line in the test target"
    return [f for f in shlex.split(m.group(1)) if not f.startswith("--ignore")]


def test_a_crashing_test_fails_alone_and_the_rest_run(tmp_path):
    flags = make_test_flags()
    assert "-n" in flags  # xdist: crashed workers are replaced
    (tmp_path / "test_crash.py").write_text(CRASHING)
    r = subprocess.run([sys.executable, "-m", "pytest", *flags, "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                        str(tmp_path / "test_crash.py")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-3000:]
    assert re.search(r"\b1 failed, 3 passed\b", out), out[-3000:]
    assert "test_segfaults" in out and "crashed" in out, out[-3000:]
