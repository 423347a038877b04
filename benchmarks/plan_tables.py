"""The docs/scaling.md tables: `mythos-plan --json` for rdt-770m and dense-1.3b at 8, 64 and 512 GPUs and rdt-3b at
512 (8 GPUs per node, 80 GB cards), one subprocess each, formatted as Markdown.

    .venv/bin/python benchmarks/plan_tables.py --out-dir /tmp/plans            # run all, then print the tables
    .venv/bin/python benchmarks/plan_tables.py --out-dir /tmp/plans --format-only
    .venv/bin/python benchmarks/plan_tables.py --out-dir /tmp/plans --hsdp     # FSDP vs HSDP (shard group 8)

`--hsdp`: rdt-770m and rdt-3b at 64 and 512 GPUs, FSDP over all ranks against HSDP with one shard group per node
(parallel.dp_replicate = nodes), `mythos-plan --comm-only` (state and collectives), bytes inside and across nodes.
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


HSDP_SETTINGS = [(name, world, layout) for name in ("rdt-770m", "rdt-3b") for world in (64, 512)
                 for layout in ("fsdp", "hsdp")]


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


def hsdp_args(name: str, world: int, layout: str) -> list[str]:
    extra = ["--train.global_batch", "4096"] if world == 512 else []
    extra += ["--model.name", name] if name != "rdt-770m" else []
    extra += ["--parallel.dp_replicate", str(world // 8)] if layout == "hsdp" else []
    return ["--config", str(REPO / "configs/rdt-770m.toml"), "--nodes", str(world // 8), "--gpus-per-node", "8",
            "--comm-only", "--json", *extra]


def hsdp_table(rows: dict) -> str:
    """Side by side per (model, GPUs): FSDP over all ranks | HSDP with a shard group per node."""
    out = ["| model | GPUs | mesh FSDP / HSDP | params + grads + AdamW per GPU (GiB) FSDP / HSDP | sent inside a node "
           "(GiB/GPU/step) FSDP / HSDP | sent across nodes (GiB/GPU/step) FSDP / HSDP | collectives across nodes "
           "FSDP / HSDP (calls, GiB) |", "|---|---|---|---|---|---|---|"]
    for name in ("rdt-770m", "rdt-3b"):
        for world in (64, 512):
            pair = [rows.get((name, world, lay)) for lay in ("fsdp", "hsdp")]
            if None in pair:
                continue
            cells = [" / ".join(f(r) for r in pair) for f in (
                lambda r: "x".join(str(r["mesh"][k]) for k in ("dp_replicate", "dp_shard", "ep")),
                lambda r: gib(sum(r["state_bytes"].values())),
                lambda r: gib(r["collective_bytes"]["intra_group"]),
                lambda r: gib(r["collective_bytes"]["inter_group"]),
                lambda r: ", ".join(f"{k} {v['calls']}x {gib(v['bytes'])}" for k, v in r["collectives"].items()
                                    if r["dim_spans"].get(k.split("@")[1], "inter") == "inter") or "none")]
            out.append(f"| {name} | {world} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--format-only", action="store_true")
    p.add_argument("--hsdp", action="store_true", help="the FSDP vs HSDP comparison instead")
    a = p.parse_args()
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if a.hsdp:
        found = {}
        for name, world, layout in HSDP_SETTINGS:
            path = out_dir / f"{name}_{world}_{layout}.json"
            if not a.format_only:
                with open(path, "w") as f:
                    subprocess.run([sys.executable, "-m", "mythos.train.plan_cli", *hsdp_args(name, world, layout)],
                                   stdout=f, check=True, cwd=REPO)
            if path.exists() and path.stat().st_size:
                found[(name, world, layout)] = json.loads(path.read_text())
        print(hsdp_table(found))
        return
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
