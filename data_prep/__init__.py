"""Corpora -> SentencePiece -> Megatron-format shards (`mythos-prep`)."""
import os
import sys

if "numpy" not in sys.modules:
    # Prep never calls BLAS, but numpy's OpenBLAS starts a thread per core at import that spins ~0.1 CPU-s while
    # the encoders need every core. Only when numpy is not loaded yet (the CLI), so library users keep theirs.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
