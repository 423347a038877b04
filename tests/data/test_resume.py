"""A prep killed with SIGKILL mid-run and re-run finishes with shards byte-identical to an uninterrupted prep."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.data.datahelp import REPO, make_corpus, run_cli

ARGS = ["--vocab-size", "400", "--sample-mb", "1", "--val-fraction", "0.05", "--shard-tokens", "20000",
        "--no-progress"]


def files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.mark.timeout(300)
def test_sigkill_then_rerun_is_byte_identical(tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=2500, lines=50, seed=1)
    ref, out = tmp_path / "ref", tmp_path / "out"

    # The interrupted run: the real process, killed with SIGKILL once a few shards are complete.
    proc = subprocess.Popen([sys.executable, "-m", "data_prep", str(corpus), "--out", str(out), "--workers", "2",
                             *ARGS], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 120
    try:
        while not (out / "train_00003.idx").exists():
            assert proc.poll() is None, f"prep ended before it could be killed: {proc.stderr.read()}"
            assert time.time() < deadline
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the workers die with their parent; this is only a safety net
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "metadata.json").exists(), "the prep had already finished: nothing was interrupted"
    left = sorted(p.name for p in out.iterdir())
    assert "prep.json" in left and "train_00000.idx" in left

    # Re-run (another worker count: the output must not depend on it) and an uninterrupted reference.
    r = run_cli(corpus, "--out", out, "--workers", "1", *ARGS, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "skipping" in r.stderr and "complete shard" in r.stderr
    r = run_cli(corpus, "--out", ref, "--workers", "2", *ARGS, timeout=240)
    assert r.returncode == 0, r.stderr

    got, want = files(out), files(ref)
    assert sorted(got) == sorted(want)
    assert sum(name.startswith("train_") for name in want) > 2 * 10  # many shards (.bin + .idx each)
    assert not [n for n in want if n.endswith(".tmp") or n == "prep.json"]
    for name in want:
        assert got[name] == want[name], name
