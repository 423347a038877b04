"""Per-rank parameter + gradient + optimizer bytes shrink with the number of FSDP ranks (fake process group).

benchmarks/fsdp_memory.py's own measurement (`one`: rank 0 of N on torch's fake process group, the trainer's engine and
step, local bytes of every parameter, gradient and AdamW state tensor) runs here in the test process: it counts tensor
bytes, not the process's memory, so the benchmark's fresh process per N would add only an import of torch."""
from __future__ import annotations

import pytest
import torch.distributed as dist

from benchmarks.fsdp_memory import one


@pytest.mark.slow
def test_per_rank_state_bytes_at_4_ranks(one_thread):
    try:
        rows = {n: one("tiny", n) for n in (1, 4)}
    finally:
        if dist.is_initialized():  # a failure inside `one` leaves its fake process group behind
            dist.destroy_process_group()
    ratio = rows[4]["total_bytes"] / rows[1]["total_bytes"]  # the benchmark's ratio: against N = 1 (no FSDP)
    assert ratio <= 0.30, rows
