"""`mythos-submit prep ... --array 4` on the real SLURM: tokenizer job, 4-task array, merge job. The shards hold the
same documents, token for token, as a single-process prep of the corpus, and training reads them."""
from __future__ import annotations

import re

import pytest

from tests.conftest import make_corpus, run_cli, train_args
from tests.data.test_sharded_prep import documents
from tests.launch.conftest import job_env

pytestmark = pytest.mark.slow


def test_prep_array_equals_single_process_prep(slurm, tmp_path):
    src = make_corpus(tmp_path, n_files=24)
    out = tmp_path / "data"
    prep = [str(src), "--out", str(out), "--vocab-size", "300", "--val-fraction", "0.1", "--workers", "1"]
    r = run_cli(["launch.submit", "prep", *prep, "--array", "4", "--time", "10"], env_extra=job_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    ids = dict(re.findall(r"(tokenizer|encode x4|merge) (\d+)", r.stdout))
    assert set(ids) == {"tokenizer", "encode x4", "merge"}, r.stdout
    info = slurm.wait_done(ids["merge"], timeout=300)
    assert info["JobState"] == "COMPLETED", info
    parts = sorted(p.name for p in out.glob("part-*"))
    assert parts == [f"part-{i:05d}-of-00004" for i in range(4)]

    single = tmp_path / "single"
    r = run_cli(["data_prep", str(src), "--out", str(single), "--tokenizer", str(out / "tokenizer.model"),
                 "--val-fraction", "0.1", "--workers", "1"])
    assert r.returncode == 0, r.stderr
    for split in ("train", "val"):
        assert documents(out, split) == documents(single, split)

    run = tmp_path / "run"
    r = run_cli(train_args(run, out, 2, "--checkpoint.interval", "0", "--checkpoint.final", "false",
                           "--metrics.tensorboard", "false"))
    assert r.returncode == 0, r.stderr
    assert "step 2/2" in r.stdout
