"""A stand-in for Megatron-LM's `tools/preprocess_data.py` output, written the way its IndexedDatasetBuilder does
(megatron/core/datasets/indexed_dataset.py: header, int32 sequence lengths, int64 byte pointers, int64 document
indices starting at 0 and ending at the sequence count; uint16 when the vocabulary is < 65500, else int32), with no
code shared with mythos' own writer so a format mismatch would show."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def write_megatron(prefix: Path, docs: list[list[list[int]]], vocab_size: int) -> Path:
    """docs: documents, each a list of sequences (several with --split-sentences). Writes PREFIX.bin/.idx."""
    dtype = np.uint16 if vocab_size < 65500 else np.int32
    code = 8 if dtype is np.uint16 else 4
    lengths, doc_index = [], [0]
    with open(f"{prefix}.bin", "wb") as f:
        for doc in docs:
            for seq in doc:
                f.write(np.asarray(seq, dtype=dtype).tobytes(order="C"))
                lengths.append(len(seq))
            doc_index.append(len(lengths))
    pointers, cur = [], 0
    for n in lengths:
        pointers.append(cur)
        cur += n * np.dtype(dtype).itemsize
    with open(f"{prefix}.idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00")
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", code))
        f.write(struct.pack("<Q", len(lengths)))
        f.write(struct.pack("<Q", len(doc_index)))
        f.write(np.array(lengths, dtype=np.int32).tobytes(order="C"))
        f.write(np.array(pointers, dtype=np.int64).tobytes(order="C"))
        f.write(np.array(doc_index, dtype=np.int64).tobytes(order="C"))
    return prefix
