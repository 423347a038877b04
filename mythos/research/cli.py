"""mythos-research EXPERIMENT [--out DIR] [--scale tiny|cpu|gpu]: one command per claim of the looped architecture.

  khop       (a) pointer following in context: train k <= 4 hops, test k <= 8 at 1..24 loops, 4 arms
  parity     (a) "think longer": prefix parity, curriculum to n = 12, test n <= 24 at n/2, n, 2n loops; arms
                 loops=n, independent loops, dense (params), dense (FLOPs); ablations of loops=n (--arms
                 loops=n-nopos, loops=n+loopemb, loops=n+lora, loops=n-openmythos, loops=n-additive,
                 loops=n-h0embed, loops=n+prelude-coda); act (halting, not told n: loops used against n); resumes
  isodepth   (a) p-hop induction: one block looped L times vs L dense layers vs 1 dense layer; resumes
  lm         (b) language (stdlib corpus, 1.23M tokens per run): loss vs params / FLOPs, loss vs inference loops
                 (fixed vs sampled), per-loop state diagnostics; controls: 1 dense layer, no prelude/coda, no loop
                 embedding
  stability  (c) LTI injection vs unconstrained injection at 1x / 3x / 10x the learning rate
  act        (d) adaptive compute: halting saves compute in cached decode; loops used vs loss, decode tokens/s

Each writes results.json and PNG plots under OUT/EXPERIMENT/. `--scale cpu` is the default (minutes to about an hour
per experiment on 2 cores: parity's four headline arms take 8 minutes per seed with --jobs 2, lm's 11 runs about
50 CPU-minutes), `tiny` is the seconds-long smoke size the tests use, `gpu` the same experiment sized for one
accelerator.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from mythos.errors import UserError, cli_entry

EXPERIMENTS = ("khop", "parity", "isodepth", "lm", "stability", "act")


def _finite(x):
    """JSON has no NaN/inf: write them as strings so the file stays standard JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def write_results(out_dir: Path, results: dict) -> Path:
    path = out_dir / "results.json"
    path.write_text(json.dumps(_finite(results), indent=1, allow_nan=False))
    return path


def run(experiment: str, out_dir: Path, scale: str, **kw) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log_file = (out_dir / "log.txt").open("a" if experiment in ("parity", "isodepth") else "w")

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    if experiment == "parity":
        from mythos.research.parity import run_parity
        results, files = run_parity(out_dir, scale, log=log, steps=kw.get("steps"), jobs=kw.get("jobs") or 1,
                                    arms=kw.get("arms"), seeds=kw.get("seeds"),
                                    on_progress=lambda partial: write_results(out_dir, {**partial, "partial": True}))
    elif experiment == "isodepth":
        from mythos.research.isodepth import run_isodepth
        results, files = run_isodepth(out_dir, scale, log=log, steps=kw.get("steps"), jobs=kw.get("jobs") or 1,
                                      seeds=kw.get("seeds"),
                                      on_progress=lambda partial: write_results(out_dir, {**partial, "partial": True}))
    elif experiment == "khop":
        from mythos.research import plots
        from mythos.research.depth import run_depth
        results = run_depth(experiment, scale, log=log, steps=kw.get("steps"), jobs=kw.get("jobs") or 1,
                            on_progress=lambda partial: write_results(out_dir, {**partial, "partial": True}))
        files = [plots.depth_curves(results, out_dir / "curves.png"), plots.depth_grid(results, out_dir / "grid.png")]
    elif experiment == "lm":
        from mythos.research.lm import run_lm
        results, files = run_lm(out_dir, scale, log=log, data=kw.get("data"), jobs=kw.get("jobs") or 1,
                                on_progress=lambda partial: write_results(out_dir, {**partial, "partial": True}))
    elif experiment == "stability":
        from mythos.research.stability import run_stability
        results, files = run_stability(out_dir, scale, log=log, data=kw.get("data"),
                                       on_progress=lambda partial: write_results(out_dir, {**partial, "partial": True}))
    else:
        from mythos.research.act_decode import run_act
        results, files = run_act(out_dir, scale, log=log, data=kw.get("data"),
                                 on_progress=lambda partial: write_results(out_dir, {**partial, "partial": True}))
    results["experiment"] = experiment
    results["partial"] = False
    results["wall_seconds"] = time.perf_counter() - t0
    results["plots"] = [p.name for p in files]
    write_results(out_dir, results)
    log(f"wrote {out_dir / 'results.json'} and {', '.join(p.name for p in files)}")
    log_file.close()
    return results


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mythos-research", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=EXPERIMENTS)
    p.add_argument("--out", default="runs/research", help="results go to OUT/EXPERIMENT/ (default runs/research)")
    p.add_argument("--scale", default="cpu", choices=("tiny", "cpu", "gpu"))
    p.add_argument("--steps", type=int, default=None, help="override the scale's training steps (khop/parity/isodepth)")
    p.add_argument("--jobs", type=int, default=1,
                   help="khop/parity/isodepth/lm: arms or runs trained at once in worker processes")
    p.add_argument("--arms", default=None, help="parity: comma-separated arms (default the four headline arms)")
    p.add_argument("--seeds", default=None, help="parity/isodepth: comma-separated seeds (default the scale's)")
    p.add_argument("--data", default=None, help="lm/stability/act: a prepared corpus directory (default data/stdlib)")
    args = p.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps: expected a positive integer, got {args.steps}")
    if args.scale == "gpu":
        import torch
        if not torch.cuda.is_available():
            raise UserError("--scale gpu: CUDA is not available on this machine")
    if args.jobs < 1:
        raise UserError(f"--jobs: expected a positive integer, got {args.jobs}")
    arms = args.arms.split(",") if args.arms else None
    if arms:
        from mythos.research.parity import ARMS
        if bad := [a for a in arms if a not in ARMS]:
            raise UserError(f"--arms: unknown {', '.join(bad)}; known: {', '.join(ARMS)}")
    try:
        seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        raise UserError(f"--seeds: expected comma-separated integers, got {args.seeds!r}") from None
    run(args.experiment, Path(args.out) / args.experiment, args.scale, steps=args.steps, data=args.data,
        jobs=args.jobs, arms=arms, seeds=seeds)
    return 0
