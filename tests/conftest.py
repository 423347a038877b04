"""Shared fixtures: a small corpus prepared once per session with the real `mythos-prep`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]

# Small and fast: the model/trainer tests need real shards, not a big vocabulary.
TINY_MODEL_ARGS = [
    "--model.name", "tiny", "--model.dim", "64", "--model.n_heads", "2", "--model.moe.n_routed", "4",
    "--model.moe.top_k", "2", "--model.moe.expert_dim", "64", "--model.attention.kv_lora_rank", "32",
    "--model.attention.nope_dim", "16", "--model.attention.rope_dim", "8", "--model.attention.v_head_dim", "16",
    "--model.loops.mean", "2", "--model.loops.max", "4", "--model.loops.backprop_k", "2",
    "--model.loops.inference", "2", "--model.lora_rank", "4",
]


def make_corpus(root: Path, n_files: int = 40) -> Path:
    """Deterministic code-like text with indentation, unicode and blank lines."""
    src = root / "corpus"
    src.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        lines = [f"def function_{i}(x, y={i}):", f'    """Docstring {i}: café ünïcode λ→{i}."""', ""]
        for j in range(30):
            lines.append(f"    if x > {j}:\n        y = y * {j} + x  # step {j}\n")
        lines.append(f"    return y + {i}\n")
        (src / f"mod_{i:03d}.py").write_text("\n".join(lines))
    return src


def run_cli(args: list[str], env_extra: dict | None = None, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    kw.setdefault("cwd", REPO)
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=timeout,
                          **kw)


def pytest_collection_modifyitems(config, items):
    """The slow tests first: with pytest-xdist the long ones start early and the short ones fill in, instead of one
    worker running a long test alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order otherwise


def made_once(tmp_path_factory, worker_id: str, name: str, make: Callable[[Path], None]) -> Path:
    """Directory `name`, filled by `make(dir)` once per test run: under pytest-xdist the first worker that needs it
    makes it while the others wait on a file lock, then all read it (the pattern of xdist's docs), so an expensive
    multi-rank run shared by tests on both workers is not made twice. Without xdist too (a fixture imported by several
    modules is set up once per module)."""
    d = _shared(tmp_path_factory, worker_id) / name
    with FileLock(f"{d}.lock"):
        if not (d / ".done").is_file():
            shutil.rmtree(d, ignore_errors=True)  # a failed attempt's leftovers
            d.mkdir()
            make(d)
            (d / ".done").touch()
    return d


def generate_compile_lock(tmp_path_factory, worker_id: str) -> FileLock:
    """Held around each `mythos-generate --compile` of the tiny CLI model at 2 loops, batch 2 (test_generate_cli, the
    README's --compile line: the same graph). Under pytest-xdist the second waits for the first and then reads its
    inductor cache entry, instead of both compiling the same C++ cold at the same time."""
    return FileLock(f"{_shared(tmp_path_factory, worker_id) / 'generate_compile'}.lock")


def _shared(tmp_path_factory, worker_id: str) -> Path:
    """The test run's directory above every xdist worker's own (the session's base without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: the machine's 2 cores are shared with other work (and OpenMP threads spin
    when the machine is overloaded)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    src = make_corpus(root)
    out = root / "data"
    r = run_cli(["data_prep", str(src), "--out", str(out), "--vocab-size", "300", "--val-fraction", "0.1",
                 "--val-min-tokens", "0", "--workers", "1"])  # no token floor: the split the tests were written for
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def profiled_run(prepared_data, tmp_path_factory, worker_id) -> tuple[Path, subprocess.CompletedProcess]:
    """(run dir, its trainer process): 3 tiny steps with a profiler trace of steps 2-3, made once per test run and
    shared by test_profile (the trace) and test_eval_cli (mythos-eval of its checkpoint): one trainer start fewer."""
    def make(d: Path) -> None:
        r = run_cli(train_args(d / "run", prepared_data, 3, "--profile.steps", "2-3"))
        (d / "trainer.json").write_text(json.dumps(vars(r)))

    d = made_once(tmp_path_factory, worker_id, "profiled_run", make)
    return d / "run", subprocess.CompletedProcess(**json.loads((d / "trainer.json").read_text()))


def train_args(run_dir: Path, data: Path, steps: int = 30, *extra: str) -> list[str]:
    return ["mythos.train.cli", "--config", str(REPO / "configs" / "tiny-cpu.toml"), "--run.dir", str(run_dir),
            "--data.path", str(data), "--train.steps", str(steps), "--train.seq_len", "64",
            "--train.global_batch", "4", "--train.micro_batch", "2", "--train.lr", "3e-3",
            "--train.warmup_steps", "3", "--train.log_interval", "5", "--checkpoint.interval", "4",
            "--checkpoint.keep", "3", "--data.val_batches", "1", *TINY_MODEL_ARGS, *extra]


def read_metrics(run_dir: Path) -> dict[int, dict]:
    import json
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {rec["step"]: rec for rec in map(json.loads, lines)}
