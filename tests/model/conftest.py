"""Model tests run on one thread: the machine's 2 cores are shared with other work."""
from __future__ import annotations

import pytest
import torch



@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
