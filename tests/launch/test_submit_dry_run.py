"""mythos-submit --dry-run previews a job without SLURM (no scontrol/srun on PATH) or with a partition that cannot
hold it, and lists the checks it skipped or that failed; --help names prep and config overrides. No cluster here."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def no_slurm_env(tmp_path) -> dict:
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    return {**os.environ, "PATH": str(empty), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def submit_cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch.submit", *args], cwd=REPO, env=no_slurm_env(tmp_path),
                          capture_output=True, text=True, timeout=120)


def in_process(capsys, *args: str):
    from launch.submit import main
    try:
        rc = main(list(args))
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_dry_run_prints_the_script_with_no_slurm_on_path(prepared_data, tmp_path):
    run = tmp_path / "run"
    r = submit_cli(tmp_path, "--config", "configs/tiny-cpu.toml", "--data.path", str(prepared_data), "--run.dir",
                   str(run), "--nodes", "4", "--gpus-per-node", "8", "--train.global_batch", "64", "--time", "30",
                   "--dry-run")
    assert r.returncode == 0, r.stderr
    for line in ("#!/bin/bash", "#SBATCH --nodes=4", "#SBATCH --gpus-per-node=8", "#SBATCH --ntasks-per-node=8",
                 "#SBATCH --time=30", "#SBATCH --requeue", "srun "):
        assert line in r.stdout, line
    assert "Traceback" not in r.stderr
    assert "skipped: partition, node, GPU, CPU and time-limit checks" in r.stderr and "scontrol" in r.stderr
    assert "checked: config, data, batch 64 = 32 ranks x 1 x micro-batch 2" in r.stderr


def test_prep_dry_run_with_no_slurm_on_path(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("hello\n")
    r = submit_cli(tmp_path, "prep", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--array", "4",
                   "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --job-name=mythos-prep-tokenizer" in r.stdout and "skipped: partition" in r.stderr
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_a_partition_that_cannot_hold_the_job(prepared_data, tmp_path, capsys, monkeypatch):
    import launch.slurm as slurm
    part = {"name": "debug", "nodes": 1, "cpus": 2, "gpus": 0, "default_time": 60, "max_time": 120}
    monkeypatch.setattr(slurm, "partition_info", lambda name: part)
    args = ["--config", "configs/tiny-cpu.toml", "--data.path", str(prepared_data), "--run.dir", str(tmp_path / "r"),
            "--nodes", "4", "--gpus-per-node", "0"]
    rc, out, err = in_process(capsys, *args, "--dry-run")
    assert rc == 0 and "#SBATCH --nodes=4" in out
    assert "FAILED: --nodes 4: partition debug has 1 nodes" in err
    rc, out, err = in_process(capsys, *args)  # for real: refused, nothing submitted
    assert rc == 2 and err == "error: --nodes 4: partition debug has 1 nodes\n"


def test_batch_misfit_names_nodes_and_tasks(prepared_data, tmp_path, capsys):
    rc, _, err = in_process(capsys, "--config", "configs/tiny-cpu.toml", "--data.path", str(prepared_data),
                            "--run.dir", str(tmp_path / "r"), "--nodes", "1", "--tasks-per-node", "3",
                            "--gpus-per-node", "0", "--dry-run")
    assert rc == 2 and len(err.splitlines()) == 1
    assert "over 3 ranks (1 nodes x 3 tasks); run on 2 or 4 ranks" in err


def test_help_mentions_prep_and_overrides(capsys):
    rc, out, _ = in_process(capsys, "--help")
    assert rc == 0
    assert "mythos-submit prep SOURCE... --out DIR --array N" in out
    assert "--train.steps" in out and "overrides" in out and "--dry-run" in out


def test_multi_node_defaults_to_one_shard_group_per_node(prepared_data, tmp_path, capsys):
    """--nodes > 1: HSDP with dp_replicate = nodes unless the user sets it; one node: plain FSDP."""
    args = ["--config", "configs/tiny-cpu.toml", "--data.path", str(prepared_data), "--run.dir", str(tmp_path / "r"),
            "--gpus-per-node", "8", "--train.global_batch", "64", "--time", "30", "--dry-run"]
    rc, _, err = in_process(capsys, *args, "--nodes", "4")
    assert rc == 0 and "mesh world 32 = dp_replicate 4 x dp_shard 8 x ep 1" in err
    assert "one shard group per node (parallel.dp_replicate = 4" in err
    rc, _, err = in_process(capsys, *args, "--nodes", "4", "--parallel.dp_replicate", "1")
    assert rc == 0 and "mesh world 32 = dp_shard 32 x ep 1" in err and "HSDP" not in err
    rc, _, err = in_process(capsys, *args, "--nodes", "1")
    assert rc == 0 and "mesh world 8 = dp_shard 8 x ep 1" in err and "HSDP" not in err
    rc, _, err = in_process(capsys, *args, "--nodes", "4", "--parallel.dp_replicate", "3")
    assert rc == 2 and err.startswith("error: config key 'parallel.dp_replicate': 3 must be >= 1 and divide")
