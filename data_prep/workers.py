"""Encoder processes: batches of documents go out, their (tokens, lengths) come back in submission order.

Why not multiprocessing.Pool: its worker-handler thread also polls the result pipe, so it spins whenever a result
is waiting to be read (about 1.5% of all CPU time of the 2-core stdlib prep, taken from the encoders), and a worker
killed from outside leaves `apply_async(...).get()` waiting forever. Here the workers pull tasks from one queue
(a free worker takes the next batch), one feeder thread writes the tasks (so the main thread can always read
results: full pipes in both directions cannot deadlock), the pipes are grown to 1 MiB, and a worker that dies is an
error.
"""
from __future__ import annotations

import array
import ctypes
import fcntl
import multiprocessing as mp
import queue
import signal
import threading
from collections import deque
from multiprocessing.connection import wait

import numpy as np

from mythos.data.tokenizer import Tokenizer, is_hf_file

PIPE_BYTES = 1 << 20
_TYPECODE = {"uint16": "H", "int32": "i"}  # array.array codes of the shard dtypes

_sp = None
_hf = None  # a Hugging Face tokenizer.json (mythos.data.Tokenizer) instead of SentencePiece
_dtype = np.dtype(np.uint16)


def _load(model_path: str, dtype: str) -> None:
    global _sp, _hf, _dtype
    _dtype = np.dtype(dtype)
    _sp = _hf = None  # in-process encoders load once per prep: the previous prep's tokenizer must not stay active
    if is_hf_file(model_path):
        _hf = Tokenizer(model_path)
        return
    import sentencepiece as spm

    _sp = spm.SentencePieceProcessor()
    _sp.load(model_path)


def encode_batch(docs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of `docs` (UTF-8 bytes: pickled to the workers as a memcpy) back to back, EOS after each, and the
    per-document lengths (EOS included). SentencePiece reads UTF-8 bytes and str alike, with the same ids."""
    if _hf is not None:
        eos = [_hf.eos_id]
        ids = [x + eos for x in _hf.encode_batch([d.decode("utf-8", errors="replace") for d in docs])]
    else:
        ids = _sp.encode(docs, num_threads=1, add_eos=True)
    flat = array.array(_TYPECODE[_dtype.name])
    for x in ids:
        flat.fromlist(x)  # a C loop over the ints: faster than numpy's per-list dtype discovery
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    return np.frombuffer(flat, dtype=_dtype), lengths


def _grow_pipe(conn) -> None:
    try:
        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (OSError, AttributeError):  # above /proc/sys/fs/pipe-max-size, or not Linux: default size, still correct
        pass


def _serve(model_path: str, dtype: str, tasks, results) -> None:
    try:  # Linux: the worker gets SIGKILL when the prep process dies (e.g. killed with SIGKILL)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _load(model_path, dtype)
    while (task := tasks.get()) is not None:
        seq, docs = task
        try:
            out = encode_batch(docs)
        except Exception as e:  # sent back, raised in the main process
            out = e
        results.put((seq, out))


class InlineEncoder:
    """workers = 1: encode in the calling process (no copies, no IPC)."""

    depth = 1  # batches to keep in flight: each is encoded when submitted

    def __init__(self, model_path: str, dtype: str):
        _load(model_path, dtype)
        self._done: deque = deque()

    @property
    def in_flight(self) -> int:
        return len(self._done)

    def submit(self, docs: list[bytes]) -> None:
        self._done.append(encode_batch(docs))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self._done.popleft()

    def close(self) -> None:
        self._done.clear()

    terminate = close


class EncoderPool:
    """`workers` processes pulling batches from one task queue, so a worker that is free takes the next batch;
    results come back tagged and are handed out in submission order."""

    def __init__(self, workers: int, model_path: str, dtype: str):
        ctx = mp.get_context("fork")
        self._tasks, self._results = ctx.SimpleQueue(), ctx.SimpleQueue()
        _grow_pipe(self._tasks._writer)
        _grow_pipe(self._results._writer)
        self.depth = 4 * workers  # batches to keep in flight: bounded memory, and covers one slow (huge) batch
        self._procs = [ctx.Process(target=_serve, args=(model_path, dtype, self._tasks, self._results), daemon=True)
                       for _ in range(workers)]
        for p in self._procs:
            p.start()
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._ready: dict[int, object] = {}  # sequence number -> result, received ahead of its turn
        self._next_seq = self._next_out = 0
        self._feeder = threading.Thread(target=self._feed, name="encoder-feeder", daemon=True)
        self._feeder.start()

    @property
    def in_flight(self) -> int:
        return self._next_seq - self._next_out

    def submit(self, docs: list[bytes]) -> None:
        self._outbox.put((self._next_seq, docs))
        self._next_seq += 1

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        reader = self._results._reader
        while self._next_out not in self._ready:
            ready = wait([reader] + [p.sentinel for p in self._procs])
            if len(ready) > 1 or reader not in ready:  # a worker exited: its batch would never come back
                dead = next(p for p in self._procs if p.sentinel in ready)
                dead.join()
                raise RuntimeError(f"encoder worker {dead.pid} died (exit code {dead.exitcode})")
            seq, out = self._results.get()
            self._ready[seq] = out
        out = self._ready.pop(self._next_out)
        self._next_out += 1
        if isinstance(out, BaseException):
            raise out
        return out

    def _feed(self) -> None:
        while (task := self._outbox.get()) is not None:
            try:
                self._tasks.put(task)
            except OSError:  # the workers are gone: result() reports it
                return

    def close(self) -> None:
        """Stop the workers after the last result was read."""
        self._outbox.put(None)
        self._feeder.join()
        for _ in self._procs:
            self._tasks.put(None)
        for p in self._procs:
            p.join()
        self._tasks.close()
        self._results.close()

    def terminate(self) -> None:
        for p in self._procs:
            p.kill()
        for p in self._procs:
            p.join()
        self._tasks._reader.close()  # no reader left: a put blocked on the full pipe fails with EPIPE
        self._outbox.put(None)
        self._feeder.join()
        self._results.close()


def start_encoders(workers: int, model_path: str, dtype: str) -> EncoderPool | InlineEncoder:
    return EncoderPool(workers, model_path, dtype) if workers > 1 else InlineEncoder(model_path, dtype)
