"""The `make demo` path on a small budget: prep -> train -> eval across loops -> generate -> export."""
import json

import pytest

from tests.conftest import run_cli, train_args


@pytest.mark.slow
def test_demo_path(prepared_data, tmp_path):
    run = tmp_path / "run"
    r = run_cli(train_args(run, prepared_data, 40, "--train.lr", "1e-2"))
    assert r.returncode == 0, r.stderr
    assert (run / "config.toml").is_file() and (run / "checkpoints" / "latest").is_file()

    r = run_cli(["mythos.evals.cli", str(run), "--loops", "1,2,4", "--batches", "1"])
    assert r.returncode == 0, r.stderr
    report = json.loads((run / "eval_loops.json").read_text())
    assert sorted(report["val_loss_by_loops"]) == ["1", "2", "4"]
    assert (run / "eval_loops.png").stat().st_size > 1000
    assert "unigram entropy" in r.stdout
    # 40 steps on a repetitive corpus already beat a context-free model
    assert min(report["val_loss_by_loops"].values()) < report["unigram_entropy"]

    gen = run_cli(["mythos.evals.generate_cli", str(run), "--prompt", "def function_1", "--loops", "6",
                   "--max-new-tokens", "12"])
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("def function_1") and len(gen.stdout) > len("def function_1")

    out = tmp_path / "model.safetensors"
    r = run_cli(["mythos.hf.export_cli", str(run), "--out", str(out)])
    assert r.returncode == 0 and out.is_file(), r.stderr
    r2 = run_cli(["mythos.evals.generate_cli", str(out), "--prompt", "def function_1", "--loops", "6",
                  "--max-new-tokens", "12"])
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout == gen.stdout  # greedy: the exported file generates what the checkpoint does


def test_eval_bad_run_dir(tmp_path):
    r = run_cli(["mythos.evals.cli", str(tmp_path / "nope")])
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
