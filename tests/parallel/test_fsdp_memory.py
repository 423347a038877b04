"""Per-rank parameter + gradient + optimizer bytes shrink with the number of FSDP ranks (fake process group)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_per_rank_state_bytes_at_4_ranks():
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fsdp_memory.py"), "--model", "tiny", "--ranks", "4",
                        "--json"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["ranks"]: row for row in json.loads(r.stdout.strip().splitlines()[-1])}
    assert rows[4]["ratio"] <= 0.30, rows
