"""(b) Does the recurrence earn its keep on language? Runs the real trainer (`mythos.train.trainer.train`) on the
stdlib corpus for looped and dense models at three widths, then measures:
  - validation loss against parameters and against training FLOPs (looped and dense)
  - validation loss against the inference loop count, for loops trained fixed vs sampled (the "V-shape" question)
  - the dense size each looped model is worth (log-linear interpolation of the dense loss-vs-params curve)
  - why loss is flat across loop counts: per-loop state norm, relative state change ||h_{t+1} - h_t|| / ||h_t||,
    direction change 1 - cos(h_{t+1}, h_t) (the coda sees loop_norm(h), so only the direction matters),
    the block's share ||Block(u) - u|| / ||u||, the injection decay a, and the loss with the looped block replaced by
    the identity (if that barely hurts, the block learned little that depends on it).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from mythos.config import Config, build_config
from mythos.checkpoint.load import load_run
from mythos.evals.unigram import unigram_entropy
from mythos.train.validate import validation_loss
from mythos.model import AttentionConfig, LoopConfig, ModelConfig, MoEConfig, model_stats
from mythos.parallel.env import DistEnv
from mythos.research import plots
from mythos.research.jobs import run_pieces
from mythos.train.trainer import train

EVAL_LOOPS = [1, 2, 3, 4, 6, 8, 12, 16]


@dataclass
class LMScale:
    dims: tuple[int, ...]  # the three widths (looped and dense alike)
    steps: int
    batch: int
    seq_len: int
    val_batches: int
    dense_layers: int
    lr: float = 3e-3
    device: str = "cpu"


SCALES = {
    "tiny": LMScale((32, 48, 64), 2, 2, 32, 1, 2),
    "cpu": LMScale((32, 64, 96), 600, 16, 128, 4, 4),  # 1.23M tokens: the demo's budget (issue 21)
    "gpu": LMScale((256, 512, 1024), 3000, 32, 512, 16, 8, 1e-3, "cuda"),
}


def looped_cfg(dim: int, vocab: int, fixed: bool = False, prelude_coda: int = 1, loop_embedding: bool = True,
               **loops) -> ModelConfig:
    """The `tiny` demo model's shape at width `dim` (dim 256 is exactly `tiny`); `prelude_coda` dense blocks before
    and after the loop."""
    lp = LoopConfig(distribution="fixed" if fixed else "poisson", mean=4.0, min=1, max=8, backprop_k=2, inference=4)
    lp = dataclasses.replace(lp, **loops)
    return ModelConfig(
        vocab_size=vocab, dim=dim, n_heads=4, n_prelude=prelude_coda, n_coda=prelude_coda, lora_rank=8, loops=lp,
        loop_embedding=loop_embedding,
        attention=AttentionConfig(kind="mla", kv_lora_rank=dim // 4, nope_dim=max(8, dim // 8), rope_dim=16,
                                  v_head_dim=dim // 4),
        moe=MoEConfig(n_routed=8, top_k=2, expert_dim=3 * dim // 2, n_shared=1)).validate()


def dense_cfg(dim: int, vocab: int, n_layers: int) -> ModelConfig:
    lp = looped_cfg(dim, vocab)
    return ModelConfig(mode="dense", vocab_size=vocab, dim=dim, n_heads=4, n_layers=n_layers,
                       attention=lp.attention).validate()


def train_run(run_dir: Path, data: str, model: ModelConfig, s: LMScale, seed: int = 0,
              checkpoint_every: int = 0) -> Config:
    cfg = build_config({"run": {"dir": str(run_dir)}, "data": {"path": data, "val_batches": s.val_batches},
                        "train": {"steps": s.steps, "seed": seed, "global_batch": s.batch, "micro_batch": s.batch,
                                  "seq_len": s.seq_len, "lr": s.lr, "warmup_steps": max(1, s.steps // 15),
                                  "device": s.device,
                                  "log_interval": max(1, s.steps // 5)},
                        "checkpoint": {"interval": checkpoint_every, "keep": 1},
                        # a nominal peak: MFU is not reported here, and measuring it costs seconds per run
                        "parallel": {"ac": "none"}, "metrics": {"tensorboard": False, "peak_tflops": 1.0}})
    cfg.model = model
    if not finished(run_dir, s.steps):  # resumes a run that was stopped; a finished or diverged one is kept
        train(cfg)
    return cfg


def finished(run_dir: Path, steps: int) -> bool:
    if (run_dir / "diverged.txt").is_file():
        return True
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return bool(lines) and json.loads(lines[-1])["step"] >= steps


@contextlib.contextmanager
def identity_block(model):
    """Replace the looped block by the identity on its input u (keeps injection, loop signal, LoRA)."""
    handle = model.recurrence.block.register_forward_hook(lambda mod, args, out: (args[0], out[1]))
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def loop_diagnostics(model, tokens_BT: torch.Tensor, n_loops: int) -> dict:
    """Per-loop state statistics from forward hooks on the recurrence (nothing in the model is copied)."""
    rec = model.recurrence
    rows: list[dict] = []

    def on_block(mod, args, out):
        u = args[0].float()
        rows.append({"block_share": float((out[0].float() - u).norm(dim=-1).mean() / u.norm(dim=-1).mean())})

    def on_loop(mod, args, out):
        h, e = args[0].float(), args[1].float()
        h_new = out[0].float()
        rows[-1].update(state_norm=float(h_new.norm(dim=-1).mean()),
                        rel_change=float((h_new - h).norm(dim=-1).mean() / h_new.norm(dim=-1).mean().clamp_min(1e-9)),
                        # loop_norm removes the scale: what the coda sees changes only with the direction
                        direction_change=float(1 - torch.cosine_similarity(h_new, h, dim=-1).mean()),
                        embed_norm=float(e.norm(dim=-1).mean()))

    hooks = [rec.block.register_forward_hook(on_block), rec.register_forward_hook(on_loop)]
    try:
        model.eval()
        model(tokens_BT, n_loops=n_loops)
    finally:
        for hk in hooks:
            hk.remove()
    inj = rec.injection
    a = inj.decay().float()
    return {"per_loop": rows, "decay_mean": float(a.mean()), "decay_min": float(a.min()), "decay_max": float(a.max()),
            "delta_mean": float(inj.delta().mean()) if inj.kind != "unconstrained" else None}


def dense_equivalent(params: float, loss: float, dense: list[tuple[float, float]]) -> float | None:
    """Dense parameter count at the same loss, log-linear between the two nearest dense points (None outside)."""
    pts = sorted(dense)
    for (p0, l0), (p1, l1) in zip(pts, pts[1:]):
        if min(l0, l1) <= loss <= max(l0, l1) and l0 != l1:
            f = (loss - l0) / (l1 - l0)
            return math.exp(math.log(p0) + f * (math.log(p1) - math.log(p0)))
    return None


def measure_run(run_dir: Path, data: str, mcfg: ModelConfig, s: LMScale) -> dict:
    """Train one run (unless finished), then its validation losses and, if looped, the loop diagnostics."""
    train_run(run_dir, data, mcfg, s)
    model, _, _ = load_run(run_dir)
    env = DistEnv.from_environment(s.device)
    model.to(env.device)
    stats = model_stats(mcfg, seq_len=s.seq_len)
    val = lambda n: validation_loss(model, data, seq_len=s.seq_len, global_batch=s.batch, batches=s.val_batches,
                                    env=env, n_loops=n, micro_batch=s.batch)
    row = {"params": stats["total_params"], "active_params": stats["active_params"],
           "train_flops": stats["flops_per_token"] * s.steps * s.batch * s.seq_len}
    if mcfg.mode == "dense":
        row["val_loss"] = val(None)
        return row
    row["loss_by_loops"] = {str(n): val(n) for n in EVAL_LOOPS}
    row["val_loss"] = row["loss_by_loops"][str(round(mcfg.loops.mean))]
    with identity_block(model):
        row["val_loss_identity_block"] = val(round(mcfg.loops.mean))
    from mythos.data import build_loader
    x_BT, _ = build_loader(data, split="val", seq_len=s.seq_len, global_batch=s.batch, rank=0, world_size=1,
                           seed=0).next_batch()
    row["diagnostics"] = loop_diagnostics(model, x_BT.to(env.device), max(EVAL_LOOPS))
    return row


def run_lm(out_dir: Path, scale: str, log=print, data: str | None = None, on_progress=None, jobs: int = 1):
    from mythos.data import read_metadata
    from mythos.errors import UserError
    s = SCALES[scale]
    data = data or "data/stdlib"
    if not (Path(data) / "metadata.json").is_file():
        raise UserError(f"{data}: no prepared corpus (run `mythos-prep stdlib --out {data} --vocab-size 4096`)")
    vocab = int(read_metadata(Path(data))["vocab_size"])
    runs = out_dir / "runs"
    specs = {}
    for d in s.dims:
        specs[f"looped-sampled-d{d}"] = looped_cfg(d, vocab)
        specs[f"dense-d{d}"] = dense_cfg(d, vocab, s.dense_layers)
    mid = s.dims[-1]
    specs[f"looped-fixed-d{mid}"] = looped_cfg(mid, vocab, fixed=True)
    specs[f"looped-fullbptt-d{mid}"] = looped_cfg(mid, vocab, backprop_k=0)
    # the shipped prelude + coda hurt length extrapolation on prefix parity: does dropping them cost on language?
    specs[f"looped-noprelude-d{mid}"] = looped_cfg(mid, vocab, prelude_coda=0)
    # the loop-index embedding hurt length extrapolation on prefix parity too
    specs[f"looped-noloopemb-d{mid}"] = looped_cfg(mid, vocab, loop_embedding=False)
    # positive control: if depth pays on this corpus at this budget, 1 dense layer is clearly worse than dense_layers
    specs[f"depth-control-1layer-d{mid}"] = dense_cfg(mid, vocab, 1)
    results = {"scale": dataclasses.asdict(s), "data": data, "unigram_entropy": unigram_entropy(data), "runs": {}}

    def done(name: str, row: dict) -> None:
        results["runs"][name] = row
        if on_progress is not None:
            on_progress(results)
        log(f"[lm] {name}: val loss {row['val_loss']:.4f} ({row['params'] / 1e6:.2f}M params)")

    run_pieces(measure_run, [(name, (runs / name, data, mcfg, s)) for name, mcfg in specs.items()], jobs, done)
    results["runs"] = {name: results["runs"][name] for name in specs}  # a stable order whatever finished first
    dense_pts = [(r["params"], r["val_loss"]) for n, r in results["runs"].items() if n.startswith("dense")]
    for name, r in results["runs"].items():
        if "loss_by_loops" in r:  # looped runs
            r["dense_equivalent_params"] = dense_equivalent(r["params"], r["val_loss"], dense_pts)
    (out_dir / "summary.md").write_text(summary_table(results))
    return results, lm_plots(results, out_dir)


def summary_table(res: dict) -> str:
    """Markdown for docs/research.md: each run's loss (and, looped, the identity-block loss and the loss at each
    inference loop count), then the per-loop state diagnostics."""
    runs = res["runs"]
    lines = [f"Unigram entropy: {res['unigram_entropy']:.4f} nats/token.", "",
             "| run | params | train FLOPs | val loss | vs unigram | identity-block loss |",
             "|---|---|---|---|---|---|"]
    for name, r in runs.items():
        ident = f"{r['val_loss_identity_block']:.4f}" if "val_loss_identity_block" in r else "-"
        lines.append(f"| {name} | {r['params'] / 1e6:.3f}M | {r['train_flops']:.2e} | {r['val_loss']:.4f} | "
                     f"{r['val_loss'] / res['unigram_entropy'] - 1:+.1%} | {ident} |")
    looped = {n: r for n, r in runs.items() if "loss_by_loops" in r}
    lines += ["", "| run | " + " | ".join(f"{n} loops" for n in EVAL_LOOPS) + " |", "|---|" + "---|" * len(EVAL_LOOPS)]
    for name, r in looped.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in r["loss_by_loops"].values()) + " |")
    lines += ["", "| run | a mean [min, max] | rel change, loops 1..8 | dir change, loops 1..4 "
                  "| block share, loops 1..4 |", "|---|---|---|---|---|"]
    for name, r in looped.items():
        d, rows = r["diagnostics"], r["diagnostics"]["per_loop"]
        lines.append(f"| {name} | {d['decay_mean']:.3f} [{d['decay_min']:.3f}, {d['decay_max']:.3f}] | "
                     + " ".join(f"{x['rel_change']:.3f}" for x in rows[:8]) + " | "
                     + " ".join(f"{x['direction_change']:.4f}" for x in rows[:4]) + " | "
                     + " ".join(f"{x['block_share']:.2f}" for x in rows[:4]) + " |")
    return "\n".join(lines) + "\n"


def lm_plots(res: dict, out_dir: Path) -> list[Path]:
    runs, ref = res["runs"], {"unigram entropy": res["unigram_entropy"]}
    fam = lambda prefix, key: (
        [r[key] for n, r in runs.items() if n.startswith(prefix)],
        [r["val_loss"] for n, r in runs.items() if n.startswith(prefix)])
    files = [
        plots.lines({"looped (sampled)": fam("looped-sampled", "params"), "dense": fam("dense", "params")},
                    out_dir / "loss_vs_params.png", xlabel="parameters", ylabel="val loss (nats/token)",
                    title="validation loss vs parameters", hlines=ref, logx=True),
        plots.lines({"looped (sampled)": fam("looped-sampled", "train_flops"), "dense": fam("dense", "train_flops")},
                    out_dir / "loss_vs_flops.png", xlabel="training FLOPs", ylabel="val loss (nats/token)",
                    title="validation loss vs training FLOPs", hlines=ref, logx=True),
    ]
    looped = {n: r for n, r in runs.items() if "loss_by_loops" in r}
    series = {n: ([int(k) for k in r["loss_by_loops"]], list(r["loss_by_loops"].values())) for n, r in looped.items()}
    big = max(res["scale"]["dims"])
    dense_big = runs.get(f"dense-d{big}", {}).get("val_loss")
    files.append(plots.lines(series, out_dir / "loss_vs_loops.png", xlabel="inference loops",
                             ylabel="val loss (nats/token)", title="loss vs inference loop count",
                             hlines={**ref, **({f"dense d{big}": dense_big} if dense_big else {})}, logx=True))
    diag = {n: ([i + 1 for i in range(len(r["diagnostics"]["per_loop"]))],
                [row["rel_change"] for row in r["diagnostics"]["per_loop"]]) for n, r in looped.items()}
    files.append(plots.lines(diag, out_dir / "state_change.png", xlabel="loop", logy=True,
                             ylabel="||h_{t+1} - h_t|| / ||h_{t+1}||", title="how much each loop changes the state"))
    return files
