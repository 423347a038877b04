"""The README's multi-rank commands on the shipped configs, under the real torchrun (tiny sizes, 2 steps), read from
the README: tiny-cpu.toml, written for one rank, on 2; small.toml with expert parallelism on 8; a world size that does not divide the batch is one
line from rank 0, first on stderr and as torchrun's root cause."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY_MODEL_ARGS

pytestmark = pytest.mark.slow
SHORT = ["--train.steps", "2", "--train.seq_len", "32", "--train.log_interval", "1", "--data.val_batches", "1",
         "--checkpoint.interval", "0", "--metrics.tensorboard", "false"]


def torchrun(nproc: int, config: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [exe, "--nproc-per-node", str(nproc), "-m", "mythos.train.cli", "--config", f"configs/{config}", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def readme_torchrun_commands() -> list[list[str]]:
    """The README's torchrun lines on the FSDP engine (DeepSpeed's: tests/train/test_deepspeed_*.py)."""
    from tests.test_readme import readme_commands
    return [shlex.split(c) for c in readme_commands() if c.startswith("torchrun ") and "deepspeed" not in c]


def test_the_readme_shows_these_rank_counts():
    counts = sorted(int(c[c.index("--nproc-per-node") + 1]) for c in readme_torchrun_commands())
    assert counts == [2, 8]


@pytest.mark.parametrize("cmd", readme_torchrun_commands(), ids=lambda c: " ".join(c[1:3] + c[-2:]))
def test_readme_torchrun_commands_run_at_their_rank_counts(prepared_data, tmp_path, cmd):
    """Each README torchrun line as written (the model shrunk to tiny sizes, 2 steps; the configs' batch settings as
    shipped, so the split is the one a user gets)."""
    from mythos.config import load_config, parse_overrides
    from mythos.train.batch import batch_split
    nproc = int(cmd[cmd.index("--nproc-per-node") + 1])
    args = cmd[cmd.index("--config") + 1:]  # --config FILE [overrides] as the README has them
    run = tmp_path / "run"
    r = torchrun(nproc, args[0].removeprefix("configs/"), *args[1:], "--data.path", str(prepared_data), "--run.dir",
                 str(run), "--train.device", "cpu", *TINY_MODEL_ARGS, *SHORT)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _metrics(run)
    assert [m["step"] for m in rows] == [1, 2] and rows[0]["world_size"] == nproc
    start = next(ln for ln in r.stdout.splitlines() if ln.startswith("model "))
    cfg = load_config(REPO / args[0], parse_overrides(args[1:]))
    ep = cfg.parallel.ep
    assert f"world {nproc} = dp_shard {nproc // ep} x ep {ep}" in start, start
    assert f"batch {batch_split(cfg, nproc).describe()}" in start, start


def test_world_size_that_does_not_divide_the_batch_is_one_line(prepared_data, tmp_path):
    r = torchrun(3, "tiny-cpu.toml", "--data.path", str(prepared_data), "--run.dir", str(tmp_path / "run"),
                 *TINY_MODEL_ARGS, *SHORT, timeout=120)
    assert r.returncode != 0
    want = ("error: config key 'train.global_batch': 16 sequences do not split over 3 ranks; run on 2 or 4 ranks, "
            "or set --train.global_batch 15 or 18")
    lines = r.stderr.splitlines()
    assert lines[0] == want, r.stderr[:2000]  # first, before anything torchrun prints
    assert sum(ln.startswith("error:") for ln in lines) == 1  # rank 0 alone
    root = r.stderr[r.stderr.index("Root Cause"):]
    assert want in root and "rank      : 0" in root  # torchrun's summary names it as the root cause
    assert not (tmp_path / "run").exists()  # refused before anything was written
