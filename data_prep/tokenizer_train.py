"""Train a SentencePiece BPE tokenizer on a bounded, deterministic sample of the corpus.

Sample: the documents with the smallest hash (a bottom-k sample, uniform over the scanned documents) whose total
size fits `sample_bytes`; at most `scan_bytes` of the corpus are scanned. Documents are cut into ~1,000-character
chunks at line ends (newlines and indentation kept, so pieces can span them). Settings are lossless for code:
identity normalisation, no dummy prefix, extra whitespace kept, whitespace-only pieces allowed, byte fallback.
Training runs on one thread with a fixed input order, so the same corpus gives a byte-identical model.
"""
from __future__ import annotations

import heapq
import io
import os
from pathlib import Path

from data_prep.sources import hash_frac
from mythos.data.atomic import atomic_write
from mythos.errors import UserError

UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3
MIN_VOCAB = 256 + 4 + 1  # byte pieces + specials + at least one learned piece
CHUNK_CHARS = 1000
MAX_LINE_CHARS = 2000  # <= 8,000 UTF-8 bytes, under max_sentence_length


def sample_documents(docs, sample_bytes: int, scan_bytes: int) -> list[str]:
    """Bottom-k-by-hash sample of `docs` ((text, bytes) pairs) within `sample_bytes`, in stream order."""
    heap: list[tuple[float, int, str, int]] = []  # max-heap on the hash via negation
    total = scanned = 0
    for i, (text, data) in enumerate(docs):
        if scanned >= scan_bytes:
            break
        scanned += len(data)
        score = hash_frac(data, b"tokenizer-sample")
        if len(data) > sample_bytes:
            continue
        if total + len(data) > sample_bytes and heap and -heap[0][0] < score:
            continue
        heapq.heappush(heap, (-score, i, text, len(data)))
        total += len(data)
        while total > sample_bytes:
            total -= heapq.heappop(heap)[3]
    return [t[2] for t in sorted(heap, key=lambda t: t[1])]


def sentences(texts: list[str]):
    for text in texts:
        buf: list[str] = []
        n = 0
        for line in text.splitlines(keepends=True):
            while len(line) > MAX_LINE_CHARS:
                if buf:
                    yield "".join(buf)
                    buf, n = [], 0
                yield line[:MAX_LINE_CHARS]
                line = line[MAX_LINE_CHARS:]
            buf.append(line)
            n += len(line)
            if n >= CHUNK_CHARS:
                yield "".join(buf)
                buf, n = [], 0
        if buf:
            yield "".join(buf)


def rare_char_filter(texts: list[str], vocab_size: int) -> dict | None:
    """SentencePiece makes every character of the sample (up to 99.95% coverage, at least 98%) a piece; with a small
    vocabulary that can exceed the vocabulary. Then drop the rarest characters from the *training* text (keeping at
    most half of the learnable pieces as characters); at encode time they fall back to bytes, still lossless."""
    budget = (vocab_size - MIN_VOCAB + 1) // 2
    if budget >= 1000:
        return None
    from collections import Counter

    counts = Counter()
    for t in texts:
        counts.update(t)
    if len(counts) <= budget:
        return None
    keep = {c for c, _ in counts.most_common(max(budget, 1))}
    return {ord(c): None for c in counts if c not in keep}


def train_tokenizer(texts: list[str], vocab_size: int, out_path: str | os.PathLike) -> None:
    """Train on `texts` and write the model to `out_path` atomically (temporary name, then rename)."""
    import sentencepiece as spm

    if vocab_size < MIN_VOCAB:
        raise UserError(f"--vocab-size {vocab_size}: too small (byte fallback needs at least {MIN_VOCAB})")
    if not texts:
        raise UserError("tokenizer sample is empty (no documents)")
    drop = rare_char_filter(texts, vocab_size)
    if drop:
        texts = [t.translate(drop) for t in texts]
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences(texts), model_writer=model, model_type="bpe", vocab_size=vocab_size,
            normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
            allow_whitespace_only_pieces=True, split_by_whitespace=False, split_digits=False, byte_fallback=True,
            character_coverage=0.9995, max_sentence_length=8192, num_threads=1, input_sentence_size=0,
            shuffle_input_sentence=False, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID,
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
        raise UserError(f"--vocab-size {vocab_size}: SentencePiece training failed ({msg[:200]})") from None
    out_path = Path(out_path)
    atomic_write(out_path, model.getvalue())
