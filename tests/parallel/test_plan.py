"""mythos-plan against reality: its dry run (fake process group, fake tensors) gives exactly the per-rank state bytes
and the collective bytes per step of real gloo runs at 2 and 4 ranks (tests/parallel/conftest.py), and its step
memory is within 15% of the ru_maxrss peak measured by benchmarks/memory_vs_loops.py in a fresh process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mythos.config import build_config
from mythos.errors import UserError
from mythos.model import ModelConfig
from tests.parallel.dist_run import tiny_model_config

REPO = Path(__file__).resolve().parents[2]


def _cfg(nproc: int, hsdp: bool = False):
    cfg = build_config({}, {})
    cfg.model = tiny_model_config(3, 0)
    cfg.train.global_batch, cfg.train.seq_len, cfg.train.micro_batch = 4, 32, 4 // nproc
    cfg.parallel.ep, cfg.parallel.dp_shard, cfg.parallel.ac = 2, nproc // 2, "loop"
    if hsdp:  # 2 shard groups: of 1 rank (2 ranks), of ep 2 (4 ranks)
        cfg.parallel.dp_replicate, cfg.parallel.ep, cfg.parallel.dp_shard = 2, nproc // 2, 1
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("hsdp", [False, True], ids=["fsdp", "hsdp"])
@pytest.mark.parametrize("nproc", [2, 4])
def test_plan_state_and_collectives_equal_the_real_run(request, nproc, hsdp):
    from mythos.parallel.accounting import split_by_span
    from mythos.train.planner import dry_run
    real = (request.getfixturevalue("hsdp_runs")[nproc] if hsdp
            else request.getfixturevalue("scaling_runs")[(nproc, 3, 1)])
    plan = dry_run(_cfg(nproc, hsdp), nproc, rank=0, memory=False)
    assert plan["state_bytes"] == real[0]["state"]
    assert plan["dim_spans"] == real[0]["spans"]
    if hsdp:
        assert "all_reduce@dp_replicate" in plan["collectives"] and plan["dim_spans"]["dp_replicate"] == "inter"
        assert plan["collective_bytes"]["inter_group"] > 0
    mean = {k: {**v, "bytes": sum(r["comm"][k]["bytes"] for r in real) / nproc} for k, v in real[0]["comm"].items()}
    assert plan["collective_bytes"] == split_by_span(mean, real[0]["spans"])
    got, want = plan["collectives"], real[0]["comm"]
    assert set(got) == set(want)
    for key in want:
        if key.startswith("all_to_all"):  # routing moves bytes between ranks; the mean over ranks is fixed
            assert got[key]["calls"] == want[key]["calls"]
            assert got[key]["bytes"] == sum(r["comm"][key]["bytes"] for r in real) / nproc, key
        else:
            assert got[key] == want[key], key


@pytest.mark.slow
def test_plan_step_memory_within_15_percent_of_measured_peak():
    from mythos.train.planner import dry_run
    cfg = build_config({}, {})
    cfg.model = ModelConfig.named("tiny")
    cfg.model.dim, cfg.model.loops.backprop_k, cfg.model.loops.mean = 256, 0, 3.0
    cfg.model.loops.distribution = "fixed"
    cfg.train.global_batch = cfg.train.micro_batch = 4
    cfg.train.seq_len, cfg.parallel.ac = 128, "loop"
    plan = dry_run(cfg, 1)
    assert plan["loops"] == 3
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072", "PYTHONPATH": str(REPO)}
    for ac in ("loop", "none"):
        r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "memory_vs_loops.py"), "--one", "3", ac,
                            "--batch", "4", "--seq-len", "128", "--warmup"],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        measured = json.loads(r.stdout.strip().splitlines()[-1])["delta_mb"] * 2**20
        estimate = plan["step_peak_bytes"][ac]
        assert abs(estimate - measured) <= 0.15 * measured, (ac, estimate / 2**20, measured / 2**20)


def test_plan_cli_rejects_a_bad_world(tmp_path, capsys):
    from mythos.train.plan_cli import main
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nglobal_batch = 8\n")
    with pytest.raises(SystemExit) as e:
        main(["--config", str(cfg), "--nodes", "1", "--gpus-per-node", "3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "global_batch" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(UserError):
        __import__("mythos.train.planner", fromlist=["step_shape"]).step_shape(build_config({}, {}), 3)


def test_counter_counts_a_repeated_micro_batch_n_times():
    """The dry run runs one middle micro-batch for n_micro - 2 identical ones and scales its collectives."""
    from mythos.parallel.accounting import CollectiveCounter
    c = CollectiveCounter()
    c.by_kind[("all_gather", "dp")].update(calls=2, bytes=20)
    before = c.snapshot()
    c.by_kind[("all_gather", "dp")].update(calls=3, bytes=25)
    c.by_kind[("all_to_all", "ep")].update(calls=3, bytes=30)
    c.repeat_since(before, 4)
    assert c.table() == {"all_gather@dp": {"calls": 6, "bytes": 40}, "all_to_all@ep": {"calls": 12, "bytes": 120}}
