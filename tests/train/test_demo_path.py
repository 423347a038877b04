"""The `make demo` path on a small budget: prep -> train -> eval across loops -> generate -> export."""
import json

import pytest

from tests.conftest import train_args
from tests.mains import run_mains


@pytest.mark.slow
def test_demo_path(prepared_data, tmp_path):
    """Every command runs as its CLI's `main(argv)` (what `python -m` runs), one after another in one fresh interpreter
    with its own stdout and stderr (run_mains): one interpreter start instead of five."""
    run = tmp_path / "run"
    out = tmp_path / "model.safetensors"
    generate = ["mythos.evals.generate_cli", "--prompt", "def function_1", "--loops", "6", "--max-new-tokens", "12"]
    train, ev, gen, export, gen2 = run_mains(
        train_args(run, prepared_data, 40, "--train.lr", "1e-2"),
        ["mythos.evals.cli", run, "--loops", "1,2,4", "--batches", "1"],
        [generate[0], run, *generate[1:]],
        ["mythos.hf.export_cli", run, "--out", out],
        [generate[0], out, *generate[1:]])
    assert train.returncode == 0, train.stderr
    assert (run / "config.toml").is_file() and (run / "checkpoints" / "latest").is_file()

    assert ev.returncode == 0, ev.stderr
    report = json.loads((run / "eval_loops.json").read_text())
    assert sorted(report["val_loss_by_loops"]) == ["1", "2", "4"]
    assert (run / "eval_loops.png").stat().st_size > 1000
    assert "unigram entropy" in ev.stdout
    # 40 steps on a repetitive corpus already beat a context-free model
    assert min(report["val_loss_by_loops"].values()) < report["unigram_entropy"]

    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("def function_1") and len(gen.stdout) > len("def function_1")

    assert export.returncode == 0 and out.is_file(), export.stderr
    assert gen2.returncode == 0, gen2.stderr
    assert gen2.stdout == gen.stdout  # greedy: the exported file generates what the checkpoint does


def test_eval_bad_run_dir(tmp_path, capsys):
    """In-process: exit 2 with one error line (any other exception, a traceback, would fail pytest.raises)."""
    from mythos.evals.cli import main
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "nope")])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: ")
