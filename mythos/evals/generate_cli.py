"""mythos-generate RUN_OR_EXPORT --prompt TEXT [--prompt TEXT ...] --loops N [--compile]: sample continuations with
the KV cache. Several prompts run as one batch, left-padded with an attention mask (each row continues exactly as it
would alone); --compile decodes with a static cache and a torch.compile'd one-token step (mythos/model/decode.py)."""
from __future__ import annotations

import argparse
import sys

import torch

from mythos.errors import UserError, cli_entry


def left_pad(rows: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [B, T], mask [B, T]) with every row right-aligned: padding first, masked out."""
    t = max(len(r) for r in rows)
    tokens_BT = torch.full((len(rows), t), pad_id, dtype=torch.long)
    mask_BT = torch.zeros((len(rows), t), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens_BT[i, t - len(r):] = torch.tensor(r, dtype=torch.long)
        mask_BT[i, t - len(r):] = 1
    return tokens_BT, mask_BT


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mythos-generate", description=__doc__)
    p.add_argument("run", help="run directory or file written by mythos-export")
    p.add_argument("--prompt", required=True, action="append",
                   help="prompt text; repeat for several prompts decoded as one padded batch")
    p.add_argument("--loops", type=int, default=None, help="loops per token (may exceed the training count)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true",
                   help="static KV cache + torch.compile'd decode step (CUDA: CUDA graphs); compiling takes a while")
    p.add_argument("--static-cache", action="store_true", help="static (preallocated) KV cache, eager")
    args = p.parse_args(argv)
    from mythos.data import Tokenizer
    from mythos.checkpoint.load import load_any
    model, _, tok_path = load_any(args.run)
    if tok_path is None or not tok_path.is_file():
        raise UserError(f"{args.run}: no tokenizer found (expected {tok_path})")
    tok = Tokenizer(str(tok_path))
    rows = [tok.encode(text) for text in args.prompt]
    for i, ids in enumerate(rows):
        if not ids:
            raise UserError(f"--prompt #{i + 1}: encodes to no tokens")
    tokens_BT, mask_BT = left_pad(rows)
    torch.manual_seed(args.seed)
    out = model.generate(tokens_BT, args.max_new_tokens, n_loops=args.loops, temperature=args.temperature,
                         top_k=args.top_k, mask_BT=mask_BT if len(rows) > 1 else None, static=args.static_cache,
                         compile=args.compile)
    pad_T = tokens_BT.shape[1]
    for i, ids in enumerate(rows):
        if len(rows) > 1:
            print(f"### {i + 1}")
        print(tok.decode(out[i, pad_T - len(ids):].tolist()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
