"""mythos-eval RUN --loops 1,2,4,8,16: validation loss per loop count, as a table and a PNG plot."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from mythos.errors import UserError, cli_entry


def parse_loops(text: str) -> list[int]:
    try:
        loops = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--loops: expected comma-separated integers, got {text!r}") from None
    if not loops or min(loops) < 1:
        raise UserError(f"--loops: expected positive integers, got {text!r}")
    return loops


def plot(results: dict[int, float], out: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = sorted(results)
    ax.plot(xs, [results[x] for x in xs], marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("loops at inference")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mythos-eval", description=__doc__)
    p.add_argument("run", help="run directory")
    p.add_argument("--loops", default="1,2,4,8,16")
    p.add_argument("--batches", type=int, default=None, help="validation batches (default: data.val_batches)")
    p.add_argument("--out", default=None, help="PNG path (default: RUN/eval_loops.png)")
    p.add_argument("--harness", default=None, metavar="TASKS",
                   help="comma-separated lm-eval tasks run on the HF export instead (local, no download: mythos_val)")
    p.add_argument("--harness-out", default=None, help="harness output directory (default: RUN/harness)")
    p.add_argument("--harness-docs", type=int, default=64, help="validation documents in the mythos_val task")
    args = p.parse_args(argv)
    loops = parse_loops(args.loops)
    if args.harness is not None:
        from mythos.evals.harness import run_harness
        tasks = [t.strip() for t in args.harness.split(",") if t.strip()]
        if not tasks or args.harness_docs < 1:
            raise UserError(f"--harness {args.harness!r} / --harness-docs {args.harness_docs}: expected task names "
                            "and a positive document count")
        run_harness(args.run, tasks, loops, Path(args.harness_out or Path(args.run) / "harness"), args.harness_docs)
        return 0
    from mythos.evals.load import load_run
    from mythos.evals.validate import validation_losses
    from mythos.parallel.env import DistEnv
    model, cfg, _ = load_run(args.run)
    env = DistEnv.from_environment("cpu")
    results = {}
    print(f"{'loops':>6} | {'val loss':>9} | {'ppl':>9}")
    for n, loss in validation_losses(model, cfg, env, loops, batches=args.batches):
        results[n or 0] = loss
        print(f"{n or '-':>6} | {loss:9.4f} | {math.exp(min(loss, 50)):9.2f}", flush=True)
    from mythos.evals.unigram import unigram_entropy
    entropy = unigram_entropy(cfg.data.path)
    best = min(results.values())
    print(f"unigram entropy of the training tokens: {entropy:.4f} nats/token; best validation loss: {best:.4f} "
          f"({100 * (1 - best / entropy):.0f}% below)")
    run = Path(args.run)
    out = Path(args.out) if args.out else run / "eval_loops.png"
    (run / "eval_loops.json").write_text(json.dumps({"val_loss_by_loops": {str(k): v for k, v in results.items()},
                                                       "unigram_entropy": entropy}, indent=1))
    plot(results, out, f"{cfg.model_name}: validation loss vs loops")
    print(f"plot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
