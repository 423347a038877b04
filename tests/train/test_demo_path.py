"""The `make demo` path on a small budget: prep -> train -> eval across loops -> generate -> export."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_cli, train_args

# The commands after training run one after another in one fresh interpreter, each as its CLI's `main(argv)` (what
# `python -m` runs), with its own stdout: one interpreter start instead of four. Training keeps its own process.
MAINS = """
import contextlib, importlib, io, json, sys
results = []
for module, argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            rc = importlib.import_module(module).main(argv)
        except SystemExit as e:
            rc = e.code
    results.append({"rc": rc, "stdout": out.getvalue()})
print(json.dumps(results))
"""


def run_mains(*commands: list[str]) -> tuple[list[dict], str]:
    """[{rc, stdout}] per command ([module, *argv]), and the interpreter's shared stderr."""
    r = subprocess.run([sys.executable, "-c", MAINS, json.dumps([(c[0], c[1:]) for c in commands])], cwd=REPO,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.splitlines()[-1]), r.stderr[-3000:]


@pytest.mark.slow
def test_demo_path(prepared_data, tmp_path):
    run = tmp_path / "run"
    r = run_cli(train_args(run, prepared_data, 40, "--train.lr", "1e-2"))
    assert r.returncode == 0, r.stderr
    assert (run / "config.toml").is_file() and (run / "checkpoints" / "latest").is_file()

    out = tmp_path / "model.safetensors"
    generate = ["mythos.evals.generate_cli", "--prompt", "def function_1", "--loops", "6", "--max-new-tokens", "12"]
    (ev, gen, export, gen2), err = run_mains(
        ["mythos.evals.cli", str(run), "--loops", "1,2,4", "--batches", "1"],
        [generate[0], str(run), *generate[1:]],
        ["mythos.hf.export_cli", str(run), "--out", str(out)],
        [generate[0], str(out), *generate[1:]])

    assert ev["rc"] == 0, err
    report = json.loads((run / "eval_loops.json").read_text())
    assert sorted(report["val_loss_by_loops"]) == ["1", "2", "4"]
    assert (run / "eval_loops.png").stat().st_size > 1000
    assert "unigram entropy" in ev["stdout"]
    # 40 steps on a repetitive corpus already beat a context-free model
    assert min(report["val_loss_by_loops"].values()) < report["unigram_entropy"]

    assert gen["rc"] == 0, err
    assert gen["stdout"].startswith("def function_1") and len(gen["stdout"]) > len("def function_1")

    assert export["rc"] == 0 and out.is_file(), err
    assert gen2["rc"] == 0, err
    assert gen2["stdout"] == gen["stdout"]  # greedy: the exported file generates what the checkpoint does


def test_eval_bad_run_dir(tmp_path, capsys):
    """In-process: exit 2 with one error line (any other exception, a traceback, would fail pytest.raises)."""
    from mythos.evals.cli import main
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "nope")])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: ")
