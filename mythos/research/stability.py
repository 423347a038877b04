"""(c) Stability: the constrained LTI injection (parcae, a ∈ (0,1) by construction) against an unconstrained one
(u = A h + B e, A a free matrix) at 1x, 3x and 10x the default learning rate, trained by the real trainer on the
stdlib corpus. Reports which runs diverge (non-finite loss, or the trainer's TrainingDiverged stop), the loss
curves, and the state norm after each loop of the last checkpoint run far past the training count (growth per
loop = how far the recurrence is from a contraction)."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from mythos.checkpoint.load import load_run
from mythos.model import InjectionConfig
from mythos.research import plots
from mythos.research.lm import loop_diagnostics, looped_cfg, train_run, LMScale
from mythos.train.trainer import TrainingDiverged

MULTIPLIERS = (1, 3, 10)
KINDS = ("parcae", "unconstrained")
PROBE_LOOPS = 24


@dataclass
class StabilityScale:
    dim: int
    lm: LMScale


SCALES = {
    "tiny": StabilityScale(32, LMScale((32,), 2, 2, 32, 1, 2)),
    "cpu": StabilityScale(64, LMScale((64,), 120, 8, 64, 2, 4)),
    "gpu": StabilityScale(512, LMScale((512,), 2000, 32, 512, 8, 8, 1e-3, "cuda")),
}


def _losses(run_dir: Path) -> list[float]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["loss"] for line in path.read_text().splitlines() if line.strip()]


def run_stability(out_dir: Path, scale: str, log=print, data: str | None = None, on_progress=None):
    from mythos.data import read_metadata
    from mythos.data import build_loader
    from mythos.errors import UserError
    s = SCALES[scale]
    data = data or "data/stdlib"
    if not (Path(data) / "metadata.json").is_file():
        raise UserError(f"{data}: no prepared corpus (run `mythos-prep stdlib --out {data} --vocab-size 4096`)")
    vocab = int(read_metadata(Path(data))["vocab_size"])
    x_BT, _ = build_loader(data, split="val", seq_len=s.lm.seq_len, global_batch=s.lm.batch, rank=0, world_size=1,
                           seed=0).next_batch()
    results = {"scale": dataclasses.asdict(s), "base_lr": s.lm.lr, "runs": {}}
    for kind in KINDS:
        for mult in MULTIPLIERS:
            name = f"{kind}-lr{mult}x"
            lm = dataclasses.replace(s.lm, lr=s.lm.lr * mult)
            mcfg = looped_cfg(s.dim, vocab)
            mcfg.injection = InjectionConfig(kind=kind)
            run_dir = out_dir / "runs" / name
            stopped = None
            try:
                train_run(run_dir, data, mcfg, lm, checkpoint_every=lm.steps // 4)
            except TrainingDiverged as e:
                stopped = str(e)
                (run_dir / "diverged.txt").write_text(stopped + "\n")
            if (run_dir / "diverged.txt").is_file():
                stopped = (run_dir / "diverged.txt").read_text().strip()
            losses = _losses(run_dir)
            row = {"lr": lm.lr, "losses": losses, "stopped": stopped,
                   "diverged": bool(stopped) or not losses or not all(math.isfinite(v) for v in losses)
                   or losses[-1] > losses[0]}
            if (run_dir / "checkpoints" / "latest").exists():
                model, _, _ = load_run(run_dir)
                diag = loop_diagnostics(model.to(s.lm.device), x_BT.to(s.lm.device), PROBE_LOOPS)
                norms = [r["state_norm"] for r in diag["per_loop"]]
                row["state_norm_per_loop"] = norms
                row["growth_per_loop"] = (norms[-1] / norms[0]) ** (1 / (len(norms) - 1)) if norms[0] > 0 else None
                row["injection_bound"] = diag["decay_max"]  # parcae: max a < 1; unconstrained: ||A||_2
            results["runs"][name] = row
            if on_progress is not None:
                on_progress(results)
            log(f"[stability] {name}: lr {lm.lr:.1e} diverged={row['diverged']} final loss "
                f"{losses[-1] if losses else float('nan'):.4f} growth/loop {row.get('growth_per_loop')}")
    runs = results["runs"]
    files = [
        plots.lines({n: (list(range(1, len(r["losses"]) + 1)), r["losses"]) for n, r in runs.items()},
                    out_dir / "loss_curves.png", xlabel="step", ylabel="train loss", title="training loss", logy=True),
        plots.lines({n: (list(range(1, len(r["state_norm_per_loop"]) + 1)), r["state_norm_per_loop"])
                     for n, r in runs.items() if "state_norm_per_loop" in r},
                    out_dir / "state_norms.png", xlabel="loop", ylabel="mean ||h_t||", logy=True,
                    title=f"state norm per loop ({PROBE_LOOPS} loops, last checkpoint)"),
    ]
    return results, files
