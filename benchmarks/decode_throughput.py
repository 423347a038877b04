"""Decode throughput: eager (dynamic cache) vs static cache vs compiled single-token step, against the memory
bandwidth limit, and optionally against OpenMythos (its source given as a path; never vendored).

    .venv/bin/python benchmarks/decode_throughput.py [--config tiny] [--batches 1,8] [--loops 4,16] \
        [--prompt 16] [--new 64] [--rounds 3] [--threads 2] [--openmythos /path/to/OpenMythos]

tok/s = batch × new tokens ÷ wall time of one whole `generate` call (prefill included), median over interleaved
rounds, after one warm-up call per mode (the compiled mode's warm-up compiles; its time is printed apart).
Bandwidth limit = bytes a decode step must read (weights it touches + the KV cache it attends over) ÷ a measured
copy bandwidth (bytes read + written per second by a large `copy_`), times the batch.
The last line is `compiled/eager at batch 1, 16 loops: X.XXx` (or at the first batch / last loop count given).
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

from mythos.model import ModelConfig, Mythos

MODES = ("eager", "static", "compiled")


def copy_bandwidth(mb: int = 256, reps: int = 5) -> float:
    """Bytes moved (read + written) per second by the best of `reps` copies of an mb-MiB fp32 tensor."""
    src = torch.ones(mb * 2**18)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.numel() * src.element_size() / best


def bytes_per_step(model: Mythos, batch: int, loops: int, context: int) -> int:
    """Bytes one decode step of `batch` rows reads: every weight of the run-once blocks, embedding rows and head,
    the looped block's non-expert weights once per loop plus the routed experts the batch is expected to touch
    (uniform routing: E·(1-(1-k/E)^B) distinct of E), and each call site's KV cache over `context` positions."""
    cfg = model.cfg
    size = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())  # noqa: E731
    once = size(model.prelude) + size(model.coda) + size(model.norm) + size(model.head)
    once += batch * cfg.dim * model.embed.weight.element_size()
    rec = model.recurrence
    experts = rec.moe.experts
    e, k = experts.n_experts, cfg.moe.top_k
    touched = e * (1 - (1 - k / e) ** batch)
    per_loop = size(rec) - size(experts) + touched * size(experts) / e
    a = cfg.attention
    elt = model.embed.weight.element_size()
    per_site = ((a.kv_lora_rank + a.rope_dim) if a.kind == "mla"
                else 2 * (a.n_kv_heads or cfg.n_heads) * (a.head_dim or cfg.dim // cfg.n_heads)) * elt
    sites = len(model.prelude) + len(model.coda) + loops
    return int(once + loops * per_loop + sites * per_site * context * batch)


def load_openmythos(path: str):
    """open_mythos/main.py from a checkout (imported by file, so its package __init__'s extras are not needed)."""
    f = Path(path) / "open_mythos" / "main.py"
    if not f.is_file():
        return None
    spec = importlib.util.spec_from_file_location("openmythos_main", f)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["openmythos_main"] = mod
    spec.loader.exec_module(mod)
    return mod


def openmythos_model(om, cfg: ModelConfig, max_len: int, loops: int):
    """OpenMythos with the config matched to ours (dims, heads, MLA ranks, experts, LoRA rank)."""
    a, m = cfg.attention, cfg.moe
    ocfg = om.MythosConfig(vocab_size=cfg.vocab_size, dim=cfg.dim, n_heads=cfg.n_heads, n_kv_heads=cfg.n_heads,
                           max_seq_len=max_len, max_loop_iters=loops, prelude_layers=cfg.n_prelude,
                           coda_layers=cfg.n_coda, attn_type="mla", kv_lora_rank=a.kv_lora_rank,
                           q_lora_rank=a.q_lora_rank or cfg.dim, qk_rope_head_dim=a.rope_dim,
                           qk_nope_head_dim=a.nope_dim, v_head_dim=a.v_head_dim, n_experts=m.n_routed,
                           n_shared_experts=m.n_shared, n_experts_per_tok=m.top_k, expert_dim=m.expert_dim,
                           lora_rank=cfg.lora_rank)
    return om.OpenMythos(ocfg).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--loops", default="4,16")
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--openmythos", default=None, help="path to an OpenMythos checkout (optional)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(x) for x in args.batches.split(",")]
    loop_counts = [int(x) for x in args.loops.split(",")]
    om = load_openmythos(args.openmythos) if args.openmythos else None
    if args.openmythos and om is None:
        print(f"OpenMythos: no open_mythos/main.py under {args.openmythos}; skipped")
    bw = copy_bandwidth()
    torch.manual_seed(0)
    cfg = ModelConfig.named(args.config)
    model = Mythos(cfg).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, config {args.config} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params), prompt {args.prompt}, "
          f"{args.new} new tokens, fp32; copy bandwidth {bw / 1e9:.1f} GB/s (read + write)")
    print(f"{'batch':>5} {'loops':>5} {'mode':>10} {'tok/s':>9} {'x eager':>8} {'MB/step':>8} {'limit tok/s':>11} "
          f"{'of limit':>8}")
    ratios = {}
    for b in batches:
        for n in loop_counts:
            prompt = torch.randint(0, cfg.vocab_size, (b, args.prompt), generator=torch.Generator().manual_seed(1))
            runs = {"eager": lambda: model.generate(prompt, args.new, n_loops=n),
                    "static": lambda: model.generate(prompt, args.new, n_loops=n, static=True),
                    "compiled": lambda: model.generate(prompt, args.new, n_loops=n, compile=True,
                                                       backend=args.backend)}
            if om is not None:
                torch.manual_seed(0)
                ref = openmythos_model(om, cfg, args.prompt + args.new, n)
                runs["openmythos"] = lambda: ref.generate(prompt, args.new, n_loops=n)
            t0 = time.perf_counter()
            outs = {name: fn() for name, fn in runs.items()}  # warm-up (compiles)
            warm = time.perf_counter() - t0
            assert torch.equal(outs["eager"], outs["static"]) and torch.equal(outs["eager"], outs["compiled"]), \
                "greedy tokens differ between modes"
            times = {name: [] for name in runs}
            for _ in range(args.rounds):  # interleaved, so load changes hit every mode alike
                for name, fn in runs.items():
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
            step_bytes = bytes_per_step(model, b, n, args.prompt + args.new // 2)
            limit = b * bw / step_bytes
            eager_tps = b * args.new / statistics.median(times["eager"])
            for name in runs:
                tps = b * args.new / statistics.median(times[name])
                print(f"{b:>5} {n:>5} {name:>10} {tps:>9.1f} {tps / eager_tps:>7.2f}x {step_bytes / 1e6:>8.1f} "
                      f"{limit:>11.1f} {tps / limit:>7.1%}")
                ratios[(b, n, name)] = tps / eager_tps
            print(f"      (warm-up of all modes incl. compile: {warm:.1f} s)", flush=True)
    b0, n0 = (1 if 1 in batches else batches[0]), (16 if 16 in loop_counts else loop_counts[-1])
    if om is not None:
        print(f"compiled/openmythos at batch {b0}, {n0} loops: "
              f"{ratios[(b0, n0, 'compiled')] / ratios[(b0, n0, 'openmythos')]:.2f}x")
    print(f"compiled/eager at batch {b0}, {n0} loops: {ratios[(b0, n0, 'compiled')]:.2f}x")


if __name__ == "__main__":
    main()
