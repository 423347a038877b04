"""Helpers for the data tests: synthetic corpora, running the real CLI, hand-made shard directories."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]

SPECIAL_DOCS = {
    "indented.py": (
        "class Foo:\n    def bar(self, x):\n        if x:\n\t\treturn {'a': [1, 2,\n            3]}\n\n\n"
        "        return None   \n    \n"
    ),
    "unicode.md": "Héllo wörld — ünïcödé ✓ 日本語のテキスト 🚀🐍 Ωμέγα\nzero-width:\u200b| nbsp:\u00a0| rtl: שלום\n",
    "blank_lines.txt": "\n\n\nfirst after blanks\n\n\n\n   \n\t\n" + "\n" * 20 + "last\n",
    "long_line.txt": ("x = [" + ", ".join(str(i) for i in range(3000)) + "]\n") + ("y" * 20000) + "\n",
    "crlf.txt": "windows\r\nline endings\r\n\r\n  and a trailing space \r\n",
    "no_newline.py": "print('no trailing newline')",
    "leading_spaces.txt": "    four leading spaces\n  two\n",
}


def code_text(rng: random.Random, n_lines: int) -> str:
    words = ["self", "data", "value", "result", "index", "count", "token", "loader", "batch", "state", "shard"]
    lines = []
    depth = 0
    for _ in range(n_lines):
        r = rng.random()
        ind = "    " * depth
        if r < 0.15:
            lines.append(f"{ind}def {rng.choice(words)}_{rng.randint(0, 99)}({rng.choice(words)}, n={rng.randint(0, 9)}):")
            depth = min(depth + 1, 4)
        elif r < 0.25 and depth:
            lines.append(f"{ind}return {rng.choice(words)} + {rng.randint(0, 999)}")
            depth -= 1
        elif r < 0.3:
            lines.append("")
        elif r < 0.4:
            lines.append(f"{ind}# {' '.join(rng.choice(words) for _ in range(rng.randint(2, 9)))}")
        else:
            lines.append(f"{ind}{rng.choice(words)}[{rng.randint(0, 50)}] = {rng.choice(words)}.{rng.choice(words)}()")
    return "\n".join(lines) + "\n"


def make_corpus(root: Path, n_files: int = 60, lines: int = 60, seed: int = 0, special: bool = True) -> dict:
    """Write a synthetic corpus; returns {relative path: text} of the non-empty documents."""
    rng = random.Random(seed)
    docs = {}
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        sub = root / f"pkg{i % 3}"
        sub.mkdir(exist_ok=True)
        rel = f"pkg{i % 3}/mod_{i:04d}.py"
        docs[rel] = code_text(rng, rng.randint(lines // 2, lines * 2))
    if special:
        docs.update(SPECIAL_DOCS)
    for rel, text in docs.items():
        (root / rel).write_bytes(text.encode("utf-8"))
    return docs


def run_cli(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "data_prep", *map(str, args)], cwd=kw.pop("cwd", REPO),
                          capture_output=True, text=True, timeout=timeout, env=env, **kw)


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """rc 2, exactly one line on stderr starting with 'error:' that names every needle, no traceback."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def write_dataset(out: Path, docs_by_split: dict[str, list[list[int]]], vocab_size: int = 1000,
                  shard_docs: int = 3, dtype: str = "uint16") -> Path:
    """A prepared directory made by hand (no tokenizer): shards of `shard_docs` documents + metadata.json."""
    from mythos.data.indexed import CODE_OF, IndexedWriter

    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, docs in docs_by_split.items():
        shards = []
        for k in range(0, len(docs), shard_docs):
            w = IndexedWriter(out / f"{split}_{k // shard_docs:05d}", dtype)
            for d in docs[k: k + shard_docs]:
                w.add_document(np.asarray(d))
            w.finalize()
            shards.append({"name": w.prefix.name, "documents": w.n_docs, "tokens": w.n_tokens})
        splits[split] = {"documents": len(docs), "tokens": sum(s["tokens"] for s in shards), "shards": shards}
    meta = {"format_version": 1, "vocab_size": vocab_size, "bos_id": 1, "eos_id": 2, "pad_id": 3, "dtype": dtype,
            "dtype_code": CODE_OF[dtype], "tokenizer": {"sha256": "none"}, "splits": splits}
    (out / "metadata.json").write_text(json.dumps(meta))
    return out
