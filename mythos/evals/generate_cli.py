"""mythos-generate RUN_OR_EXPORT --prompt TEXT --loops N: sample a continuation with the KV cache."""
from __future__ import annotations

import argparse
import sys

import torch

from mythos.errors import UserError, cli_entry


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mythos-generate", description=__doc__)
    p.add_argument("run", help="run directory or file written by mythos-export")
    p.add_argument("--prompt", required=True)
    p.add_argument("--loops", type=int, default=None, help="loops per token (may exceed the training count)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from mythos.data import Tokenizer
    from mythos.evals.load import load_any
    model, _, tok_path = load_any(args.run)
    if tok_path is None or not tok_path.is_file():
        raise UserError(f"{args.run}: no tokenizer found (expected {tok_path})")
    tok = Tokenizer(str(tok_path))
    ids = tok.encode(args.prompt)
    if not ids:
        raise UserError("--prompt: encodes to no tokens")
    torch.manual_seed(args.seed)
    out = model.generate(torch.tensor([ids]), args.max_new_tokens, n_loops=args.loops,
                         temperature=args.temperature, top_k=args.top_k)
    print(tok.decode(out[0].tolist()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
