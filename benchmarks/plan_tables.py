"""The docs/scaling.md tables: `mythos-plan --json` for rdt-770m and dense-1.3b at 8, 64 and 512 GPUs and rdt-3b at
512 (8 GPUs per node, 80 GB cards), one subprocess each, formatted as Markdown.

    .venv/bin/python benchmarks/plan_tables.py --out-dir /tmp/plans            # run all, then print the tables
    .venv/bin/python benchmarks/plan_tables.py --out-dir /tmp/plans --format-only

At 512 GPUs the configs' global batch (512 sequences) is raised to 4096 so that every rank keeps micro-batch 8.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS = [("rdt-770m", "configs/rdt-770m.toml", 8, []), ("rdt-770m", "configs/rdt-770m.toml", 64, []),
            ("rdt-770m", "configs/rdt-770m.toml", 512, ["--train.global_batch", "4096"]),
            ("dense-1.3b", "configs/dense-1.3b.toml", 8, []), ("dense-1.3b", "configs/dense-1.3b.toml", 64, []),
            ("dense-1.3b", "configs/dense-1.3b.toml", 512, ["--train.global_batch", "4096"]),
            ("rdt-3b", "configs/rdt-770m.toml", 512, ["--train.global_batch", "4096", "--model.name", "rdt-3b"])]


def gib(b: float) -> str:
    return f"{b / 2**30:.2f}"


def table(rows: list[dict]) -> str:
    out = ["| model | GPUs | mesh dp_shard x ep | micro x n | params | grads | AdamW | step peak: configured ac / none "
           "| total / GPU | fits 80 GB | largest micro-batch | collectives per step (GiB sent by one rank) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b, peaks = r["per_rank_bytes"], r["step_peak_bytes"]
        ac = next(iter(peaks))
        comm = ", ".join(f"{k} {v['calls']}x {gib(v['bytes'])}" for k, v in r["collectives"].items())
        out.append(f"| {r['name']} | {r['world']} | {r['mesh']['dp_shard']} x {r['mesh']['ep']} | "
                   f"{r['micro_batch']} x {r['n_micro']} | {gib(b['params'])} | {gib(b['grads'])} | {gib(b['optim'])} | "
                   f"{gib(peaks[ac])} (ac={ac}) / {gib(peaks['none'])} | {gib(b['total'])} | "
                   f"{'yes' if r['fits'] else 'no'} | {r['largest_micro_batch']} | {comm} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--format-only", action="store_true")
    a = p.parse_args()
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, cfg, world, extra in SETTINGS:
        path = out_dir / f"{name}_{world}.json"
        if not a.format_only:
            with open(path, "w") as f:
                subprocess.run([sys.executable, "-m", "mythos.train.plan_cli", "--config",
                                str(REPO / cfg),
                                "--nodes", str(world // 8), "--gpus-per-node", "8", "--json", *extra],
                               stdout=f, check=True, cwd=REPO)
        if path.exists() and path.stat().st_size:
            rows.append({"name": name, **json.loads(path.read_text())})
    print(table(rows))


if __name__ == "__main__":
    main()
