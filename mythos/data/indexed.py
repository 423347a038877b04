"""Megatron's indexed dataset format (`.bin` + `.idx`): the one writer and the one reader of shards.

`.bin`: token ids back to back. `.idx` (little-endian):
    b"MMIDIDX\\x00\\x00"  <Q version=1  <B dtype code  <Q sequence count  <Q document count (= sequences + 1)
    int32[seq] lengths  int64[seq] byte offsets into .bin  int64[seq+1] document indices (0, 1, ..., seq)
One sequence per document, EOS already appended by the caller.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from mythos.data.atomic import replace_atomically
from mythos.errors import UserError

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER_SIZE = len(MAGIC) + 8 + 1 + 8 + 8  # 34 bytes
# Megatron's codes; we write 8 (uint16) and 4 (int32).
DTYPE_CODES: dict[int, type] = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16,
}
CODE_OF = {np.dtype(v).name: k for k, v in DTYPE_CODES.items()}
TOKEN_DTYPES = ("uint16", "int32")  # the integer dtypes a token stream may use here


def dtype_for_vocab(vocab_size: int) -> str:
    """uint16 if every id fits (vocab <= 65,536), else int32."""
    return "uint16" if vocab_size <= 65536 else "int32"


def dtype_capacity(dtype: str) -> int:
    """The largest vocabulary a token dtype can hold."""
    return int(np.iinfo(np.dtype(dtype)).max) + 1


class IndexedWriter:
    """Streams documents into `<prefix>.bin.tmp`; `finalize()` writes the index and renames both files.

    The `.bin` is renamed before the `.idx`, so a complete `.idx` implies a complete `.bin`.
    """

    def __init__(self, prefix: str | os.PathLike, dtype: str = "uint16"):
        if dtype not in TOKEN_DTYPES:
            raise UserError(f"{prefix}: token dtype {dtype!r} not supported (use one of {TOKEN_DTYPES})")
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        self._bin_tmp = Path(f"{self.prefix}.bin.tmp")
        self._bin = open(self._bin_tmp, "wb")
        self._lengths: list[np.ndarray] = []
        self.n_docs = 0
        self.n_tokens = 0

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append several documents: `tokens` holds them back to back, `lengths` their sizes."""
        tokens = np.ascontiguousarray(tokens, dtype=self.dtype)
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != tokens.size:
            raise ValueError("lengths do not add up to the token count")
        self._bin.write(tokens.tobytes())
        self._lengths.append(lengths.astype(np.int32))
        self.n_docs += lengths.size
        self.n_tokens += tokens.size

    def add_document(self, tokens) -> None:
        arr = np.asarray(tokens)
        self.add_documents(arr, np.array([arr.size]))

    def finalize(self) -> None:
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        write_index(Path(f"{self.prefix}.idx.tmp"), lengths, self.dtype.name)
        replace_atomically(self._bin_tmp, Path(f"{self.prefix}.bin"), fsync=True)
        replace_atomically(Path(f"{self.prefix}.idx.tmp"), Path(f"{self.prefix}.idx"), fsync=True)

    def abort(self) -> None:
        self._bin.close()
        self._bin_tmp.unlink(missing_ok=True)


def write_index(path: Path, lengths: np.ndarray, dtype: str) -> None:
    n = int(lengths.size)
    itemsize = np.dtype(dtype).itemsize
    offsets = np.zeros(n, dtype="<i8")
    if n > 1:
        np.cumsum(lengths[:-1].astype(np.int64) * itemsize, out=offsets[1:])
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<Q", VERSION))
        f.write(struct.pack("<B", CODE_OF[np.dtype(dtype).name]))
        f.write(struct.pack("<Q", n))
        f.write(struct.pack("<Q", n + 1))
        f.write(lengths.astype("<i4").tobytes())
        f.write(offsets.tobytes())
        f.write(np.arange(n + 1, dtype="<i8").tobytes())


class IndexedDataset:
    """Memory-mapped reader of one `<prefix>.idx/.bin` pair; every size is checked before use.

    `tokens` is the whole `.bin` as a flat array (documents back to back), `lengths`/`offsets` per document.
    """

    def __init__(self, prefix: str | os.PathLike):
        prefix = str(prefix)
        for ext in (".idx", ".bin"):
            if prefix.endswith(ext):
                prefix = prefix[: -len(ext)]
        self.prefix = prefix
        idx_path, bin_path = f"{prefix}.idx", f"{prefix}.bin"
        for p in (idx_path, bin_path):
            if not os.path.isfile(p):
                raise UserError(f"{p}: no such file")
        idx_size = os.path.getsize(idx_path)
        with open(idx_path, "rb") as f:
            head = f.read(HEADER_SIZE)
        if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
            raise UserError(f"{idx_path}: wrong magic {head[:len(MAGIC)]!r}, expected {MAGIC!r} (not a Megatron .idx)")
        if len(head) < HEADER_SIZE:
            raise UserError(f"{idx_path}: truncated header ({idx_size} bytes, expected at least {HEADER_SIZE})")
        (version,) = struct.unpack_from("<Q", head, 9)
        (code,) = struct.unpack_from("<B", head, 17)
        n_seq, n_doc = struct.unpack_from("<QQ", head, 18)
        if version != VERSION:
            raise UserError(f"{idx_path}: version {version}, expected {VERSION}")
        if code not in DTYPE_CODES or np.dtype(DTYPE_CODES[code]).kind not in "iu":
            raise UserError(f"{idx_path}: unknown or non-integer dtype code {code}")
        self.dtype = np.dtype(DTYPE_CODES[code])
        expected = HEADER_SIZE + n_seq * 4 + n_seq * 8 + n_doc * 8
        if n_seq > 2**40 or n_doc > 2**40 or idx_size < expected:
            raise UserError(f"{idx_path}: {idx_size} bytes, but its header ({n_seq} sequences, {n_doc} documents) "
                            f"needs {expected} (truncated or corrupt)")
        # (Megatron's multimodal variant appends sequence modes after these arrays; extra bytes are allowed.)
        with open(idx_path, "rb") as f:  # read, not mapped: small, and keeps no file descriptor open per shard
            mm = f.read(expected)
        o = HEADER_SIZE
        self.lengths = np.frombuffer(mm, dtype="<i4", count=n_seq, offset=o)
        o += 4 * n_seq
        self.offsets = np.frombuffer(mm, dtype="<i8", count=n_seq, offset=o)
        o += 8 * n_seq
        self.doc_idx = np.frombuffer(mm, dtype="<i8", count=n_doc, offset=o)
        bin_size = os.path.getsize(bin_path)
        n_tokens = int(self.lengths.sum(dtype=np.int64))
        if n_seq and (self.lengths.min() < 0):
            raise UserError(f"{idx_path}: negative sequence length")
        if bin_size != n_tokens * self.dtype.itemsize:
            raise UserError(f"{bin_path}: {bin_size} bytes, but {idx_path} lists {n_tokens} tokens of "
                            f"{self.dtype.name} = {n_tokens * self.dtype.itemsize} bytes (truncated or mismatched)")
        if n_seq:
            want = np.zeros(n_seq, np.int64)
            np.cumsum(self.lengths[:-1].astype(np.int64) * self.dtype.itemsize, out=want[1:])
            if not np.array_equal(want, self.offsets):
                raise UserError(f"{idx_path}: sequence offsets are not contiguous (not supported)")
        self.n_tokens = n_tokens
        self.tokens = (np.memmap(bin_path, dtype=self.dtype, mode="r") if n_tokens
                       else np.zeros(0, dtype=self.dtype))

    def __len__(self) -> int:
        return int(self.lengths.size)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.offsets[i]) // self.dtype.itemsize
        return self.tokens[start: start + int(self.lengths[i])]

    def max_token(self) -> int:
        return int(self.tokens.max()) if self.n_tokens else -1
