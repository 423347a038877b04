"""mythos-plan suggests only micro-batches that divide the per-rank batch (and the trainer's split accepts the
suggestion as given), exits 1 when the config does not fit, and says "dense" rather than "loops None"."""
from __future__ import annotations

import json

import pytest

from mythos.config import load_config, parse_overrides
from mythos.train.plan_cli import main
from mythos.train.batch import split_batch

CONFIG = "[train]\nglobal_batch = 12\nmicro_batch = 12\nseq_len = 128\n[model]\nname = \"tiny\"\n"


def plan(capsys, cfg, *args):
    with pytest.raises(SystemExit) as e:  # cli_entry returns; the console script exits with it
        raise SystemExit(main(["--config", str(cfg), "--nodes", "1", "--gpus-per-node", "1", *args]))
    return e.value.code, capsys.readouterr().out


def recorded_step_peaks(monkeypatch) -> dict[tuple[int, str], int]:
    """{(micro-batch, ac): bytes} of every step peak the planner measures while patched. The plan at micro-batch 12
    measures its slope at 1 sequence itself (plan_cli._largest_micro_batch): that is the step peak a second plan with
    --train.micro_batch 1 would report (one micro-batch either way), without that plan's other dry runs."""
    from mythos.train import planner
    measure, peaks = planner._step_peak, {}

    def recording(cfg, mesh, shape, ac, fake_mode):
        peaks[shape.micro_batch, ac] = measure(cfg, mesh, shape, ac, fake_mode)
        return peaks[shape.micro_batch, ac]
    monkeypatch.setattr(planner, "_step_peak", recording)
    return peaks


@pytest.mark.slow
def test_suggested_micro_batch_divides_and_is_accepted(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    peaks = recorded_step_peaks(monkeypatch)
    big = json.loads(plan(capsys, cfg, "--gpu-mem", "100", "--json")[1])
    monkeypatch.undo()
    b, p12, p1 = big["per_rank_bytes"], big["step_peak_bytes"]["loop"], peaks[1, "loop"]
    assert peaks[12, "loop"] == p12
    slope = (p12 - p1) / 11  # step memory is affine in the micro-batch (what the planner assumes)
    # a GPU that holds 7.5 sequences' step memory: 7 fits by memory, but 7 does not divide 12
    mem = (b["params"] + b["optim"] + p1 + 6.5 * slope) / 1e9
    rc, out = plan(capsys, cfg, "--gpu-mem", f"{mem:.6f}", "--json")
    r = json.loads(out)
    assert rc == 1 and not r["fits"]  # 12 per forward does not fit: exit 1
    assert r["largest_micro_batch_memory"] == 7, r
    m = r["largest_micro_batch"]
    assert 12 % m == 0 and m == max(d for d in (1, 2, 3, 4, 6, 12) if d <= r["largest_micro_batch_memory"])
    assert m != r["largest_micro_batch_memory"]  # the raw fit was rounded down to a divisor

    rc, text = plan(capsys, cfg, "--gpu-mem", f"{mem:.6f}", "--train.micro_batch", str(m))
    assert rc == 0, text  # passed back, it fits and runs as given
    assert f"micro-batch {m} x {12 // m} per step" in text and "fits a" in text and "loops 4" in text
    c = load_config(cfg, parse_overrides(["--train.micro_batch", str(m)]))
    s = split_batch(c.train.global_batch, 1, c.train.micro_batch)
    assert (s.micro_batch, s.derived) == (m, False)  # the trainer runs exactly this


def test_dense_config_says_dense(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    rc, out = plan(capsys, cfg, "--gpu-mem", "100", "--model.mode", "dense", "--train.seq_len", "32")
    assert rc == 0 and "loops None" not in out and "| dense" in out.splitlines()[0], out
