"""How long a checkpoint save blocks the training loop: sync vs async (`checkpoint.async_save`) saves of `small`.

One process, model `small` with AdamW state (one optimizer step first, so the checkpoint has its full size). Each
mode saves --saves times through the trainer's own CheckpointManager; the stall is the time `save()` blocks (sync:
the whole write, hashing and commit; async: DCP's in-memory copy only). For async the time until the background write
is committed (`wait()`) is reported too. Also: the manifest's SHA-256 against zlib's crc32 over the written files.

    .venv/bin/python benchmarks/checkpoint_stall.py              # small, 3 saves per mode
    .venv/bin/python benchmarks/checkpoint_stall.py --model tiny --saves 5
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small")
    p.add_argument("--saves", type=int, default=3)
    p.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    a = p.parse_args()

    import torch
    import torch.nn.functional as F

    from mythos.config import TrainConfig
    from mythos.model import ModelConfig, Mythos
    from mythos.checkpoint import CheckpointManager
    from mythos.train.optim import build_optimizer

    torch.manual_seed(0)
    cfg = ModelConfig.named(a.model)
    model = Mythos(cfg)
    opt = build_optimizer(model, TrainConfig())
    tokens = torch.randint(0, cfg.vocab_size, (1, 33))
    out = model(tokens[:, :-1], n_loops=1)
    F.cross_entropy(out.logits_BTV.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    opt.step()
    state = {"scheduler": {}, "data": {}, "tokens_seen": 0}

    root = Path(a.dir or tempfile.mkdtemp(prefix="mythos-ckpt-bench-"))
    rows = {}
    for mode in ("sync", "async"):
        mgr = CheckpointManager(root / mode, keep=2, async_save=mode == "async", say=lambda msg: None)
        stalls, totals = [], []
        for i in range(a.saves):
            t0 = time.perf_counter()
            mgr.save(i + 1, model, opt, state)
            stalls.append(time.perf_counter() - t0)
            mgr.wait()
            totals.append(time.perf_counter() - t0)
        rows[mode] = (statistics.median(stalls), statistics.median(totals))
    files = [f for f in (root / "sync" / "checkpoints" / f"step_{a.saves:07d}").iterdir() if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    hashes = {}
    for name, fn in (("sha256", lambda b: hashlib.sha256(b).digest()), ("crc32", zlib.crc32)):
        blobs = [f.read_bytes() for f in files]
        t0 = time.perf_counter()
        for b in blobs:
            fn(b)
        hashes[name] = time.perf_counter() - t0
    shutil.rmtree(root, ignore_errors=True)

    params = sum(p.numel() for p in model.parameters())
    print(f"model {a.model}: {params / 1e6:.1f}M params, checkpoint {size / 1e6:.0f} MB, {a.saves} saves per mode "
          f"(median), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'mode':>6} | {'loop blocked (s)':>16} | {'until committed (s)':>19} | {'stall vs sync':>13}")
    for mode, (stall, total) in rows.items():
        print(f"{mode:>6} | {stall:16.3f} | {total:19.3f} | {stall / rows['sync'][0]:12.2f}x")
    for name, dt in hashes.items():
        print(f"hash {name:>6}: {dt:.3f} s for the checkpoint ({size / dt / 1e9:.2f} GB/s), "
              f"{dt / rows['sync'][0]:.0%} of a sync save")


if __name__ == "__main__":
    main()
