"""(a) Iso-depth (Saunshi et al. 2025): is a block looped L times worth an L-layer dense model on p-hop induction?

Task (tasks.PHop): a hop-count token, then T symbols; the answer is the symbol reached after p "previous
occurrence" hops, p uniform in [1, max_p]. Arms (same data, steps, seed):
  looped-1xL  one block looped L times (k = 1: the Mythos recurrence is one block); the MoE is one routed expert of
              the dense FFN's width, top 1, no shared expert, so the looped block is a dense block plus the injection
  dense-L     L dense blocks (the same depth, L times the parameters)
  dense-1     one dense block (the same parameters, 1/L the depth)
Evaluation: accuracy at the answer per p; the looped arm also at 2L loops. Each (arm, seed) writes
OUT/isodepth/<scale>/runs/<arm>_s<seed>.json when it finishes; a rerun skips finished runs (same fingerprint).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from mythos.model import AttentionConfig, LoopConfig, ModelConfig, MoEConfig, model_stats
from mythos.research.depth import dense_config
from mythos.research.jobs import run_pieces
from mythos.research.synthetic import accuracy_by_k, to_device, train_arm
from mythos.research.tasks import PHop


@dataclass
class IsoDepthScale:
    dim: int
    steps: int
    batch: int
    lr: float
    loops: int  # L
    n_symbols: int
    length: int
    max_p: int
    eval_batch: int
    seeds: tuple[int, ...]
    device: str = "cpu"


SCALES = {
    "tiny": IsoDepthScale(32, 6, 16, 3e-3, 2, 4, 8, 2, 16, (0,)),
    "cpu": IsoDepthScale(64, 3000, 64, 1e-3, 4, 6, 24, 4, 512, (0, 1)),
    "gpu": IsoDepthScale(256, 20000, 256, 5e-4, 8, 8, 64, 8, 4096, (0, 1, 2), "cuda"),
}


def task_of(s: IsoDepthScale) -> PHop:
    return PHop(s.n_symbols, s.length, s.max_p)


def arm_configs(s: IsoDepthScale) -> dict[str, ModelConfig]:
    vocab = task_of(s).vocab_size
    dense1 = dense_config(vocab, s.dim, 1)
    looped = ModelConfig(
        vocab_size=vocab, dim=s.dim, n_heads=4, n_prelude=0, n_coda=0, lora_rank=0, loop_embedding=False,
        loops=LoopConfig(distribution="fixed", mean=float(s.loops), min=1, max=s.loops, backprop_k=0,
                         inference=s.loops),
        attention=AttentionConfig(kind="gqa"),
        moe=MoEConfig(n_routed=1, top_k=1, expert_dim=dense1.dense_ffn_dim, n_shared=0)).validate()
    return {f"looped-1x{s.loops}": looped, f"dense-{s.loops}": dense_config(vocab, s.dim, s.loops), "dense-1": dense1}


def fingerprint(name: str, s: IsoDepthScale, seed: int) -> str:
    # "every-prefix": the task scores every position (runs that scored only the last one are not reused)
    blob = json.dumps([name, seed, dataclasses.asdict(s), dataclasses.asdict(arm_configs(s)[name]), "every-prefix"],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_one(name: str, s: IsoDepthScale, seed: int, log=print) -> dict:
    """Train one arm at one seed; accuracy per p (and, looped, at L and 2L loops). Self-contained (worker-safe)."""
    cfg, task = arm_configs(s)[name], task_of(s)
    gen = torch.Generator().manual_seed(10_000)
    ps = list(range(1, s.max_p + 1))
    batches = {p: to_device(task.sample(s.eval_batch, [p], gen), s.device) for p in ps}
    model, res = train_arm(name, cfg, task, train_k=ps, steps=s.steps, batch=s.batch, lr=s.lr, seed=seed,
                           eval_every=max(1, s.steps // 10), eval_batches=batches, device=s.device, log=log)
    loops = [s.loops, 2 * s.loops] if cfg.mode == "rdt" else [None]
    acc = {str(n or "dense"): {str(p): a for p, a in accuracy_by_k(model, batches, n).items()} for n in loops}
    stats = model_stats(cfg, seq_len=task.seq_len)
    return {"arm": name, "seed": seed, "fingerprint": fingerprint(name, s, seed), "params": stats["total_params"],
            "flops_per_token": stats["flops_per_token"], "train_seconds": res.seconds, "curve": res.curve,
            "accuracy": acc}


def run_isodepth(out_dir: Path, scale: str, log=print, steps: int | None = None, jobs: int = 1,
                 seeds: list[int] | None = None, on_progress=None):
    """Train the missing (arm, seed) runs, then aggregate every finished one into results, a table and a plot."""
    from mythos.research import plots
    s = SCALES[scale]
    if steps:
        s = dataclasses.replace(s, steps=steps)
    names = list(arm_configs(s))
    runs_dir = out_dir / scale / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    done = {}
    for path in sorted(runs_dir.glob("*.json")):
        row = json.loads(path.read_text())
        if row.get("arm") in names and row.get("fingerprint") == fingerprint(row["arm"], s, row["seed"]):
            done[(row["arm"], row["seed"])] = row
    pairs = [(a, sd) for sd in (seeds if seeds is not None else s.seeds) for a in names]
    for a, sd in pairs:
        if (a, sd) in done:
            log(f"[{a}] seed {sd}: finished earlier, skipped")

    def results() -> dict:
        task = task_of(s)
        return {"task": task.name, "scale": dataclasses.asdict(s), "chance": task.chance, "arms": names,
                "runs": {f"{a}_s{sd}": row for (a, sd), row in sorted(done.items())}}

    def finished(key: str, row: dict) -> None:
        done[(row["arm"], row["seed"])] = row
        (runs_dir / f"{key}.json").write_text(json.dumps(row, separators=(",", ":")) + "\n")
        log(f"[{row['arm']}] seed {row['seed']} done in {row['train_seconds']:.0f}s: {row['accuracy']}")
        if on_progress is not None:
            on_progress(results())

    todo = [(f"{a}_s{sd}", (a, s, sd, log if jobs <= 1 else print)) for a, sd in pairs if (a, sd) not in done]
    run_pieces(train_one, todo, jobs, finished)
    res = results()
    if not done:
        return res, []
    (out_dir / "summary.md").write_text(table(res))
    series = {}
    for a in names:
        rows = [r for r in res["runs"].values() if r["arm"] == a]
        for n in (rows[0]["accuracy"] if rows else {}):
            ps = sorted(int(p) for p in rows[0]["accuracy"][n])
            label = a if n == "dense" or n == str(s.loops) else f"{a} at {n} loops"
            series[f"{label} ({len(rows)} seeds)"] = (ps, [sum(r["accuracy"][n][str(p)] for r in rows) / len(rows)
                                                           for p in ps])
    files = [plots.lines(series, out_dir / "isodepth_by_p.png", xlabel="hops p", ylabel="answer accuracy",
                         title=f"p-hop induction: 1 block x {s.loops} loops vs {s.loops} / 1 dense layers",
                         hlines={"chance": res["chance"]})]
    return res, files


def table(res: dict) -> str:
    """Accuracy per p, per seed, one row per arm and loop count (markdown, for docs/research.md)."""
    ps = list(range(1, res["scale"]["max_p"] + 1))
    lines = ["| arm | loops | params | seeds | " + " | ".join(f"p = {p}" for p in ps) + " | train s / seed |",
             "|" + "---|" * (len(ps) + 5)]
    for a in res["arms"]:
        rows = sorted((r for r in res["runs"].values() if r["arm"] == a), key=lambda r: r["seed"])
        for n in (rows[0]["accuracy"] if rows else {}):
            cells = [a, n, str(rows[0]["params"]), ", ".join(str(r["seed"]) for r in rows)]
            cells += [" / ".join(f"{r['accuracy'][n][str(p)]:.3f}" for r in rows) for p in ps]
            cells.append(", ".join(f"{r['train_seconds']:.0f}" for r in rows))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
