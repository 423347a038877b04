"""Data prep throughput on the `stdlib` corpus, beside baselines measured in the same run.

    .venv/bin/python benchmarks/prep_throughput.py [--workers 1 2] [--repeats 2] [--keep DIR]

Rows:
  raw SentencePiece encode   one process, one thread, documents already in memory: the ceiling per core. Each
                             round takes the faster of two measurements, so the baseline is never a slow outlier:
                             one encode call in this process, and a forked process running the same code as the
                             2-process row (the conditions of the ceiling row, with 1 process)
  M tok/CPU-s               tokens per CPU-second (user+sys of the process and its workers): how much work
                             each pipeline adds, independent of how busy the shared cores are
  2 independent processes    raw encode of half the corpus in each of 2 forked processes: what 2 cores really give
  datasets.map (num_proc=2)  Dataset.from_dict(texts).map(batched encode, num_proc=2): the usual HF pipeline
  mythos-prep, N workers     the real CLI (subprocess, --tokenizer given: no training), end to end wall time
                             (start-up, reading, hashing, encoding, writing shards); also its encode phase alone
  loader batch assembly      build_loader(...).next_batch() tokens/s (seq_len 1024, global batch 32)
The goal: mythos-prep with 2 workers >= 85% of twice the raw single-process encode rate.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def stdlib_docs() -> list[str]:
    from data_prep.sources import ReadOptions, iter_corpus, parse_source

    return [t for t, _ in iter_corpus([parse_source("stdlib")], ReadOptions())]


def prep(args: list[str]) -> tuple[float, float, str]:
    """Run the real CLI; (wall seconds, CPU seconds of it and its workers, stdout)."""
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "data_prep", *args, "--no-progress"], capture_output=True, text=True,
                       cwd=REPO)
    dt = time.perf_counter() - t
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        sys.exit(f"prep failed: {r.stderr}")
    return dt, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime), r.stdout


def raw_encode(model: Path, docs: list[str]) -> tuple[int, float]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    t, c = time.perf_counter(), time.process_time()
    n = sum(len(x) + 1 for x in sp.encode(docs, num_threads=1))
    return n, time.perf_counter() - t, time.process_time() - c


def _encode_part(model: str, docs: list[str]) -> None:
    import sentencepiece as spm

    spm.SentencePieceProcessor(model_file=model).encode(docs, num_threads=1)


def raw_parallel(model: Path, docs: list[str], n_proc: int) -> float:
    """n independent processes (forked, documents already in memory), each encoding 1/n of the bytes: what the
    cores deliver to perfectly parallel encoding, with no pipeline at all."""
    import multiprocessing as mp

    sizes = [len(d) for d in docs]
    parts: list[list[str]] = [[] for _ in range(n_proc)]
    loads = [0] * n_proc
    for i in sorted(range(len(docs)), key=lambda i: -sizes[i]):
        k = loads.index(min(loads))
        parts[k].append(docs[i])
        loads[k] += sizes[i]
    ctx = mp.get_context("fork")
    t = time.perf_counter()
    procs = [ctx.Process(target=_encode_part, args=(str(model), part)) for part in parts]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join()
    return time.perf_counter() - t


def hf_map(model: Path, docs: list[str], num_proc: int, cache: Path) -> tuple[int, float]:
    import datasets

    datasets.disable_progress_bars()
    model_s = str(model)

    def enc(batch):
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=model_s)
        ids = sp.encode(batch["text"], num_threads=1)
        return {"ids": [x + [2] for x in ids], "n": [len(x) + 1 for x in ids]}

    t = time.perf_counter()
    ds = datasets.Dataset.from_dict({"text": docs})
    out = ds.map(enc, batched=True, batch_size=64, num_proc=num_proc, remove_columns=["text"],
                 cache_file_name=str(cache / "map.arrow"))
    n = sum(out["n"])
    return n, time.perf_counter() - t


def loader_rate(data: Path, seq_len: int = 1024, gb: int = 32, steps: int = 100) -> float:
    from mythos.data import build_loader

    ld = build_loader(str(data), "train", seq_len=seq_len, global_batch=gb, seed=0)
    ld.next_batch()
    t = time.perf_counter()
    for _ in range(steps):
        ld.next_batch()
    return steps * gb * seq_len / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3, help="rounds; each row reports its best round")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--keep", help="keep the prepared directories here")
    a = p.parse_args()
    tmp = Path(a.keep or tempfile.mkdtemp(prefix="prep-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)

    full = tmp / "full"
    shutil.rmtree(full, ignore_errors=True)
    dt_full, _, out = prep(["stdlib", "--out", str(full), "--vocab-size", str(a.vocab_size), "--workers", "2"])
    n_total = int(re.search(r"(\d+) tokens \(", out).group(1))
    model = full / "tokenizer.model"
    print(f"full prep (train tokenizer + encode, 2 workers): {dt_full:.1f} s, {n_total} tokens", flush=True)
    docs = stdlib_docs()
    n_bytes = sum(len(d.encode()) for d in docs)

    # Rounds interleave every pipeline, so a busy neighbour on the shared cores hits them alike; best round kept.
    best: dict[str, tuple[float, float]] = {}  # name -> (wall tok/s, tok per CPU-second)

    def keep(name: str, rate: float, per_cpu: float) -> None:
        old = best.get(name, (0.0, 0.0))
        best[name] = (max(old[0], rate), max(old[1], per_cpu))

    loads = []
    for r in range(a.repeats):
        loads.append(os.getloadavg()[0])
        n, dt, cpu = raw_encode(model, docs)
        keep("raw", max(n / dt, n / raw_parallel(model, docs, 1)), n / cpu)
        keep("par2", n / raw_parallel(model, docs, 2), 0.0)
        for w in a.workers:
            d = tmp / f"w{w}"
            shutil.rmtree(d, ignore_errors=True)
            dt, cpu, out = prep(["stdlib", "--out", str(d), "--tokenizer", str(model), "--workers", str(w)])
            m = re.search(r"([\d.]+) M tokens encoded in ([\d.]+) s \(([\d.]+) M tok/s", out)
            keep(f"e2e{w}", n_total / dt, n_total / cpu)
            keep(f"enc{w}", float(m.group(3)) * 1e6, 0.0)
        shutil.rmtree(tmp / "hf", ignore_errors=True)
        (tmp / "hf").mkdir()
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        c, (n, dt) = time.process_time(), hf_map(model, docs, 2, tmp / "hf")
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = time.process_time() - c + (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
        keep("hf", n / dt, n / cpu)
        print(f"round {r + 1}/{a.repeats} (load avg {loads[-1]:.1f}): " + ", ".join(
            f"{k} {v[0] / 1e6:.2f}" for k, v in best.items()) + " M tok/s (best so far)", flush=True)
    del docs
    lr = max(loader_rate(tmp / f"w{a.workers[0]}") for _ in range(a.repeats))

    raw = best["raw"][0]
    rows = [("raw SentencePiece encode, 1 process, 1 thread (in memory)", "raw"),
            ("2 independent raw encode processes: the 2-core ceiling", "par2"),
            ("datasets.map, num_proc=2 (in memory -> arrow cache)", "hf")]
    for w in a.workers:
        s_ = "s" if w > 1 else ""
        rows += [(f"mythos-prep, {w} worker{s_}: end to end (wall, incl. start-up)", f"e2e{w}"),
                 (f"mythos-prep, {w} worker{s_}: encode phase only", f"enc{w}")]
    print(f"\ncorpus: stdlib, {n_bytes / 1e6:.1f} MB, {n_total / 1e6:.2f} M tokens (vocab {a.vocab_size}); "
          f"{os.cpu_count()} cores; best of {a.repeats} rounds; 1-min load average at round starts: "
          + ", ".join(f"{x:.1f}" for x in loads))
    print(f"| {'pipeline':<64} | {'M tok/s':>7} | {'vs raw':>6} | {'vs 2x raw':>9} | {'M tok/CPU-s':>11} |")
    print(f"|{'-' * 66}|{'-' * 8}:|{'-' * 7}:|{'-' * 10}:|{'-' * 12}:|")
    for name, key in rows:
        rate, per_cpu = best[key]
        pc = f"{per_cpu / 1e6:.2f}" if per_cpu else "-"
        print(f"| {name:<64} | {rate / 1e6:>7.2f} | {rate / raw:>6.0%} | {rate / (2 * raw):>9.0%} | {pc:>11} |")
    print(f"| {'loader batch assembly (seq_len 1024, global batch 32)':<64} | {lr / 1e6:>7.1f} | {'':>6} | "
          f"{'':>9} | {'':>11} |")
    print(f"\nfull stdlib prep incl. tokenizer training (2 workers): {dt_full:.1f} s")
    if "e2e2" in best:
        e2e = best["e2e2"][0]
        print(f"goal (2 workers end to end >= 85% of 2x raw): {e2e / (2 * raw):.0%} -> "
              f"{'met' if e2e >= 0.85 * 2 * raw else 'NOT met'}; CPU efficiency of the 2-worker prep: "
              f"{best['e2e2'][1] / best['raw'][1]:.0%} of raw tokens per CPU-second; vs the measured 2-process "
              f"ceiling: {e2e / best['par2'][0]:.0%}")
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
