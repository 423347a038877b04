"""lm-eval runs the local tasks on the tiny trained model through the HF export and writes its results JSON; its
nats/token on mythos_val equals our own model's on the same documents (<= 1e-4) at each loop count, its accuracy on
the shipped multiple choice equals ours, and our reference's windowing reproduces mythos-eval's validation loss
exactly when fed the packed validation stream."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("lm_eval")


@pytest.mark.slow
def test_lm_eval_local_task_matches_ours(tiny_run, tmp_path, capsys):
    from mythos.evals.cli import main
    out = tmp_path / "harness"
    assert main([str(tiny_run), "--loops", "1,4", "--harness", "mythos_val,mythos_python_mc", "--harness-out", str(out),
                 "--harness-docs", "3"]) == 0
    summary = json.loads((out / "harness_summary.json").read_text())
    assert set(summary) == {"1", "4"}
    for n in ("1", "4"):
        files = list((out / f"loops_{n}").rglob("results_*.json"))
        assert len(files) == 1, files  # written by lm-eval's EvaluationTracker
        res = json.loads(files[0].read_text())
        assert res["config"]["model_args"]["n_loops"] == int(n)
        lm_eval_loss = res["results"]["mythos_val"]["nats_per_token,none"]
        ours = summary[n]["mythos_val"]["mythos_nats_per_token"]
        assert abs(lm_eval_loss - ours) <= 1e-4, (n, lm_eval_loss, ours)
        assert 0 < res["results"]["mythos_val"]["bits_per_byte,none"] < 20
        acc = res["results"]["mythos_python_mc"]["acc,none"]
        assert acc == summary[n]["mythos_python_mc"]["mythos_acc"] and 0 <= acc <= 1
    assert summary["1"]["mythos_val"]["nats_per_token"] != summary["4"]["mythos_val"]["nats_per_token"]
    assert "mythos_val" in capsys.readouterr().out


def test_reference_windows_reproduce_validation_loss(tiny_run):
    """Fed the val stream after its first token (which becomes the prefix), the lm-eval-style windows of
    reference_nats_per_token are mythos-eval's packed windows: the same loss."""
    from mythos.data import open_split
    from mythos.evals.harness import reference_nats_per_token
    from mythos.checkpoint.load import load_run
    from mythos.train.validate import validation_loss
    from mythos.parallel.env import DistEnv
    model, cfg, _ = load_run(tiny_run)
    stream = np.concatenate([np.asarray(s.tokens) for s in open_split(cfg.data.path, "val")]).astype(np.int64)
    S, G = cfg.train.seq_len, cfg.train.global_batch
    assert stream.size > S * G + 1
    env = DistEnv.from_environment("cpu")
    for n in (1, 3):
        want = validation_loss(model, cfg.data.path, seq_len=S, global_batch=G, batches=1, env=env, n_loops=n,
                               micro_batch=G)
        got = reference_nats_per_token(model, [stream[1:S * G + 1].tolist()], int(stream[0]), S, n)
        assert abs(got - want) <= 1e-6, (n, got, want)
