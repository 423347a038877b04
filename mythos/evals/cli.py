"""mythos-eval RUN --loops 1,2,4,8,16: validation loss per loop count, as a table and a PNG plot."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from mythos.errors import UserError, cli_entry

VAL_WARN_TOKENS = 20_000  # a validation split below this gives a loss too noisy to compare runs or loop counts


def unigram_comparison(best: float, entropy: float) -> str:
    """The best loss against the unigram entropy, worded by its sign (never "-11% below")."""
    head = f"unigram entropy of the training tokens: {entropy:.4f} nats/token; best validation loss: {best:.4f}"
    if entropy <= 0:
        return head
    gap = abs(1 - best / entropy) * 100
    if best < entropy:
        return f"{head} ({gap:.0f}% below it)"
    return (f"{head} ({gap:.0f}% above it: the model does not yet beat token frequencies alone; train longer or "
            f"check the data)")


def val_size_warning(scored: int, split_tokens: int, split_docs: int) -> str | None:
    """A warning when the validation split is small (the loss is noise) or scored more than once (it wraps)."""
    notes = []
    if split_tokens < VAL_WARN_TOKENS:
        notes.append(f"the validation split holds only {split_tokens} tokens in {split_docs} documents (under "
                     f"{VAL_WARN_TOKENS}), so this loss is noisy")
    if split_tokens and scored > split_tokens:
        notes.append(f"{scored} tokens scored from a {split_tokens}-token split: the same tokens are scored "
                     f"{scored / split_tokens:.1f} times")
    if not notes:
        return None
    return ("warning: " + "; ".join(notes) + ". Re-run mythos-prep with a larger --val-fraction or "
            "--val-min-tokens.")


def parse_loops(text: str) -> list[int]:
    try:
        loops = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--loops: expected comma-separated integers, got {text!r}") from None
    if not loops or min(loops) < 1:
        raise UserError(f"--loops: expected positive integers, got {text!r}")
    return loops


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
    from mythos.checkpoint.load import load_run_state
    from mythos.train.validate import val_split_tokens, validation_results
    from mythos.parallel.env import DistEnv
    model, cfg, _, state = load_run_state(args.run)
    env = DistEnv.from_environment("cpu")
    results, stats = {}, {}
    print(f"{'loops':>6} | {'val loss':>9} | {'± s.e.':>7} | {'ppl':>9}")
    for n, st in validation_results(model, cfg, env, loops, batches=args.batches):
        results[n or 0], stats[n or 0] = st.loss, st
        print(f"{n or '-':>6} | {st.loss:9.4f} | {st.stderr:7.4f} | {math.exp(min(st.loss, 50)):9.2f}", flush=True)
    scored = next(iter(stats.values())).tokens
    split_tokens, split_docs = val_split_tokens(cfg.data.path)
    batches = args.batches or cfg.data.val_batches
    print(f"scored {scored} tokens per loop count ({batches} batches x {cfg.train.global_batch} sequences x "
          f"{cfg.train.seq_len}); validation split: {split_tokens} tokens in {split_docs} documents")
    warning = val_size_warning(scored, split_tokens, split_docs)
    if warning:
        print(warning, file=sys.stderr)
    from mythos.evals.unigram import unigram_entropy
    entropy = unigram_entropy(cfg.data.path)
    best = min(results.values())
    print(unigram_comparison(best, entropy))
    run = Path(args.run)
    out = Path(args.out) if args.out else run / "eval_loops.png"
    step = (state or {}).get("step")
    tokens_seen = (state or {}).get("tokens_seen")
    (run / "eval_loops.json").write_text(json.dumps({
        "val_loss_by_loops": {str(k): v for k, v in results.items()},
        "stderr_by_loops": {str(k): s.stderr for k, s in stats.items()}, "tokens_scored": scored,
        "val_split_tokens": split_tokens, "val_split_documents": split_docs, "unigram_entropy": entropy,
        "step": step, "tokens_seen": tokens_seen}, indent=1))
    from mythos.evals.plot import plot_loops
    plot_loops(results, {k: s.stderr for k, s in stats.items()}, entropy, out,
               f"{cfg.model_name}: validation loss vs loops", step=step, tokens_seen=tokens_seen, scored=scored)
    print(f"plot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
