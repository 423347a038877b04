"""The encoder processes: same output as SentencePiece itself, in submission order, whatever the worker count;
errors and dead workers surface instead of hanging."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import sentencepiece as spm

from data_prep import workers as W
from data_prep.tokenizer_train import train_tokenizer
from tests.data.datahelp import make_corpus


@pytest.fixture(scope="module")
def model_and_docs(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    files = make_corpus(root / "corpus", n_files=40, lines=30, seed=3)
    texts = [t for t in files.values() if t]
    train_tokenizer(texts, 400, root / "m.model")
    return str(root / "m.model"), [t.encode() for t in texts]


def reference(model: str, docs: list[bytes]) -> list[list[int]]:
    sp = spm.SentencePieceProcessor(model_file=model)
    return [ids + [sp.eos_id()] for ids in sp.encode([d.decode() for d in docs])]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_results_match_sentencepiece_in_submission_order(model_and_docs, workers):
    model, docs = model_and_docs
    cuts = np.cumsum([0] + [1, 9, 2, 7, 3, 5, 4, 8] * 10)
    batches = [docs[a: b] for a, b in zip(cuts[:-1], cuts[1:]) if a < len(docs)]  # uneven sizes, all documents
    ref = reference(model, docs)
    enc = W.start_encoders(workers, model, "uint16")
    got: list[list[int]] = []
    try:
        for b in batches:  # several in flight at once, uneven sizes: results must still come back in order
            enc.submit(b)
            if enc.in_flight > 4:
                tokens, lengths = enc.result()
                got += [x.tolist() for x in np.split(tokens, np.cumsum(lengths)[:-1])]
        while enc.in_flight:
            tokens, lengths = enc.result()
            assert tokens.dtype == np.uint16 and lengths.dtype == np.int64
            got += [x.tolist() for x in np.split(tokens, np.cumsum(lengths)[:-1])]
    finally:
        enc.close()
    assert got == ref


def test_int32_dtype(model_and_docs):
    model, docs = model_and_docs
    enc = W.start_encoders(2, model, "int32")
    enc.submit(docs[:3])
    tokens, lengths = enc.result()
    enc.close()
    assert tokens.dtype == np.int32
    assert [x.tolist() for x in np.split(tokens, np.cumsum(lengths)[:-1])] == reference(model, docs[:3])


def test_worker_exception_is_raised_in_the_caller(model_and_docs):
    model, docs = model_and_docs
    enc = W.start_encoders(2, model, "uint16")
    enc.submit(docs[:2])
    enc.submit([12345])  # not text: SentencePiece raises in the worker
    try:
        enc.result()
        with pytest.raises(TypeError):
            enc.result()
    finally:
        enc.terminate()


@pytest.mark.timeout(60)
def test_a_killed_worker_is_an_error_not_a_hang(model_and_docs):
    model, docs = model_and_docs
    enc = W.start_encoders(2, model, "uint16")
    try:
        os.kill(enc._procs[0].pid, signal.SIGKILL)
        enc._procs[0].join()
        for _ in range(6):
            enc.submit(docs[:4])
        with pytest.raises(RuntimeError, match=r"encoder worker \d+ died \(exit code -9\)"):
            for _ in range(6):
                enc.result()
    finally:
        enc.terminate()


@pytest.mark.timeout(60)
def test_terminate_returns_while_the_feeder_is_blocked_on_a_full_pipe(model_and_docs):
    model, _ = model_and_docs
    enc = W.start_encoders(2, model, "uint16")
    for p in enc._procs:
        os.kill(p.pid, signal.SIGSTOP)  # nobody reads the task pipe
    for _ in range(8):
        enc.submit([b"x" * (1 << 20)])  # 8 MiB: more than the pipe holds
    time.sleep(0.5)
    assert not enc._outbox.empty() or enc._feeder.is_alive()
    t = time.perf_counter()
    enc.terminate()
    assert time.perf_counter() - t < 3.0
    assert not enc._feeder.is_alive()
    assert all(p.exitcode == -signal.SIGKILL for p in enc._procs)
