"""(d) Adaptive compute: does ACT halting save compute at inference?

Trains an ACT-enabled looped LM with the real trainer (training always runs exactly n loops on every rank), then
decodes validation text token by token with the KV cache (teacher forcing, so the loss is measured on the same
tokens) in two modes at the same halting threshold:
  masked  KVCache()                  every loop runs for every row; halted positions are masked (the old behaviour)
  skip    KVCache(skip_halted=True)  a loop computes only rows still running; skipped loops' KV entries are filled
                                     from the last loop each token computed (Huginn)
and reports, per threshold, mean loops used per token, loss, and decode tokens/s (best of two timed passes).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from mythos.checkpoint.load import load_run
from mythos.model import ACTConfig, KVCache
from mythos.research import plots
from mythos.research.lm import LMScale, looped_cfg, train_run

THRESHOLDS = (0.5, 0.8, 0.95, 0.99)


@dataclass
class ACTScale:
    dim: int
    lm: LMScale
    decode_rows: int
    decode_tokens: int
    n_loops: int
    ponder_weight: float


SCALES = {
    "tiny": ACTScale(32, LMScale((32,), 2, 2, 32, 1, 2), 2, 5, 4, 1e-2),
    "cpu": ACTScale(64, LMScale((64,), 150, 8, 64, 2, 4), 8, 48, 8, 1e-2),
    "gpu": ACTScale(512, LMScale((512,), 2000, 32, 512, 8, 8, 1e-3, "cuda"), 32, 256, 16, 1e-2),
}


@torch.no_grad()
def teacher_forced_decode(model, tokens_BT: torch.Tensor, n_loops: int, skip: bool) -> dict:
    """Cached decode over tokens_BT one token at a time: mean next-token loss, mean loops per token, tokens/s."""
    model.eval()
    cache = KVCache(skip_halted=skip)
    b, t = tokens_BT.shape
    nll, steps = torch.zeros((), device=tokens_BT.device), torch.zeros((), device=tokens_BT.device)
    sync = torch.cuda.synchronize if tokens_BT.is_cuda else (lambda: None)
    t0 = time.perf_counter()
    for i in range(t - 1):
        out = model(tokens_BT[:, i:i + 1], n_loops=n_loops, cache=cache)
        nll += F.cross_entropy(out.logits_BTV[:, -1].float(), tokens_BT[:, i + 1], reduction="sum")
        steps += out.halt_stats["mean_steps"] * b
    sync()
    dt = time.perf_counter() - t0
    n = b * (t - 1)
    return {"loss": float(nll / n), "loops_per_token": float(steps / n), "tokens_per_s": n / dt}


def run_act(out_dir: Path, scale: str, log=print, data: str | None = None, on_progress=None):
    from mythos.data import build_loader, read_metadata
    from mythos.errors import UserError
    s = SCALES[scale]
    data = data or "data/stdlib"
    if not (Path(data) / "metadata.json").is_file():
        raise UserError(f"{data}: no prepared corpus (run `mythos-prep stdlib --out {data} --vocab-size 4096`)")
    vocab = int(read_metadata(Path(data))["vocab_size"])
    mcfg = looped_cfg(s.dim, vocab)
    mcfg.act = ACTConfig(enabled=True, ponder_weight=s.ponder_weight, threshold=0.99)
    run_dir = out_dir / "runs" / f"act-d{s.dim}"
    log(f"[act] training {run_dir.name} (ACT on, ponder weight {s.ponder_weight})")
    train_run(run_dir, data, mcfg, s.lm)
    model, _, _ = load_run(run_dir)
    model.to(s.lm.device)
    x_BT, _ = build_loader(data, split="val", seq_len=s.decode_tokens, global_batch=s.decode_rows, rank=0,
                           world_size=1, seed=0).next_batch()
    x_BT = x_BT.to(s.lm.device)
    from mythos.evals.unigram import unigram_entropy
    results = {"scale": dataclasses.asdict(s), "n_loops": s.n_loops, "unigram_entropy": unigram_entropy(data),
               "thresholds": {}}
    for thr in THRESHOLDS:
        model.cfg.act.threshold = thr
        row = {}
        for mode in ("masked", "skip", "masked", "skip"):  # interleaved, best of two: the machine is shared
            r = teacher_forced_decode(model, x_BT, s.n_loops, skip=mode == "skip")
            if mode not in row or r["tokens_per_s"] > row[mode]["tokens_per_s"]:
                row[mode] = r
        row["speedup"] = row["skip"]["tokens_per_s"] / row["masked"]["tokens_per_s"]
        results["thresholds"][str(thr)] = row
        if on_progress is not None:
            on_progress(results)
        log(f"[act] threshold {thr}: loops/token {row['skip']['loops_per_token']:.2f} of {s.n_loops} | loss masked "
            f"{row['masked']['loss']:.4f} skip {row['skip']['loss']:.4f} | tok/s masked "
            f"{row['masked']['tokens_per_s']:.1f} skip {row['skip']['tokens_per_s']:.1f} (x{row['speedup']:.2f})")
    th = results["thresholds"]
    xs = [th[k]["skip"]["loops_per_token"] for k in th]
    files = [
        plots.lines({"skip (halted rows not computed)": (xs, [th[k]["skip"]["loss"] for k in th]),
                     "masked (all loops computed)": (xs, [th[k]["masked"]["loss"] for k in th])},
                    out_dir / "loss_vs_loops_used.png", xlabel="mean loops used per token",
                    ylabel="decode loss (nats/token)", title=f"ACT thresholds {', '.join(th)} (n_loops {s.n_loops})",
                    hlines={"unigram entropy": results["unigram_entropy"]}),
        plots.lines({"skip": (xs, [th[k]["skip"]["tokens_per_s"] for k in th]),
                     "masked": (xs, [th[k]["masked"]["tokens_per_s"] for k in th])},
                    out_dir / "decode_speed.png", xlabel="mean loops used per token", ylabel="decode tokens/s",
                    title="cached decode throughput (CPU, shared machine)"),
    ]
    return results, files
