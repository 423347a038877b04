"""Peak memory vs loop count T, with and without per-loop activation checkpointing (parallel.ac = loop).

Each (T, ac) setting runs in a FRESH process: one forward + backward of the `tiny` model (backprop through ALL loops,
backprop_k = 0, so without checkpointing the activations of every loop are kept) and reports
the peak resident set size (tracemalloc misses tensors: the kernel's VmHWM, reset just before the forward, or
ru_maxrss where it cannot be reset) and the resident memory before the forward.

Allocator: glibc raises its mmap threshold dynamically after large frees, after which freed activation buffers stay
in the heap and ru_maxrss grows with fragmentation rather than with live tensors. The children therefore run with
MALLOC_MMAP_THRESHOLD_=131072 (a fixed threshold: large buffers are mmapped and returned on free) unless
--malloc-default is given; docs/benchmarks.md records both.

    .venv/bin/python benchmarks/memory_vs_loops.py                     # table, T = 1 2 4 8 16, ac none|loop
    .venv/bin/python benchmarks/memory_vs_loops.py --loops 4 16 --acs loop --json
    .venv/bin/python benchmarks/memory_vs_loops.py --one 16 loop       # one setting (what the table runs per row)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> bool:
    """Restart the kernel's peak-RSS counter (VmHWM) so that a spike before the step (imports, model build) cannot
    pass for the step's peak; False where /proc/self/clear_refs is not writable (then ru_maxrss is used)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mb(reset: bool) -> float:
    if reset:
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("VmHWM:")).split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(loops: int, ac: str, batch: int, seq_len: int, dim: int, warmup: bool = False) -> dict:
    sys.path.insert(0, str(REPO))
    import torch
    import torch.nn.functional as F

    from mythos.config import ParallelConfig
    from mythos.model import ModelConfig, Mythos
    from mythos.parallel import parallelize

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = ModelConfig.named("tiny")
    cfg.dim = dim
    cfg.loops.backprop_k = 0
    cfg.loops.max = max(cfg.loops.max, loops)
    model = parallelize(Mythos(cfg), None, ParallelConfig(ac=ac))
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq_len + 1))
    if warmup:  # a 1x16-token step first: one-time runtime allocations then fall before `before`, not in the delta
        out = model(tokens[:1, :16], n_loops=loops)
        F.cross_entropy(out.logits_BTV.flatten(0, 1), tokens[:1, 1:17].flatten()).backward()
        model.zero_grad(set_to_none=True)
        del out
    before = _rss_mb()
    reset = _reset_peak()
    out = model(tokens[:, :-1], n_loops=loops)
    loss = F.cross_entropy(out.logits_BTV.flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    peak = _peak_mb(reset)
    return {"loops": loops, "ac": ac, "peak_mb": round(peak, 1), "before_mb": round(before, 1),
            "delta_mb": round(peak - before, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loops", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--acs", nargs="+", default=["none", "loop"])
    p.add_argument("--baseline", type=int, default=4, help="T the ratios are taken against (same ac)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--json", action="store_true")
    p.add_argument("--malloc-default", action="store_true", help="leave glibc's dynamic mmap threshold on")
    p.add_argument("--warmup", action="store_true",
                   help="run a tiny step before measuring, so delta_mb is the step's own memory (mythos-plan check)")
    p.add_argument("--one", nargs=2, metavar=("T", "AC"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(int(a.one[0]), a.one[1], a.batch, a.seq_len, a.dim, a.warmup)))
        return
    rows = []
    for ac in a.acs:
        for t in sorted(set(a.loops) | {a.baseline}):
            cmd = [sys.executable, __file__, "--one", str(t), ac, "--batch", str(a.batch), "--seq-len",
                   str(a.seq_len), "--dim", str(a.dim)]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            if not a.malloc_default:
                env["MALLOC_MMAP_THRESHOLD_"] = "131072"
            r = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    base = {r["ac"]: r for r in rows if r["loops"] == a.baseline}
    for r in rows:
        r["peak_ratio"] = round(r["peak_mb"] / base[r["ac"]]["peak_mb"], 3)
        r["delta_ratio"] = round(r["delta_mb"] / max(base[r["ac"]]["delta_mb"], 1e-9), 3)
    if a.json:
        print(json.dumps(rows))
        return
    alloc = "glibc default" if a.malloc_default else "MALLOC_MMAP_THRESHOLD_=131072"
    print(f"tiny model dim {a.dim}, batch {a.batch} x seq {a.seq_len}, backprop through all loops, {alloc}; "
          f"ratios against T={a.baseline} with the same ac")
    print(f"{'ac':>5} {'T':>3} {'peak MB':>9} {'pre-fwd MB':>10} {'fwd+bwd MB':>10} {'peak/T4':>8} {'delta/T4':>9}")
    for r in rows:
        print(f"{r['ac']:>5} {r['loops']:>3} {r['peak_mb']:>9.1f} {r['before_mb']:>10.1f} {r['delta_mb']:>10.1f} "
              f"{r['peak_ratio']:>8.3f} {r['delta_ratio']:>9.3f}")


if __name__ == "__main__":
    main()
