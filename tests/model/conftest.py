"""Model tests run on one thread: the machine's 2 cores are shared with other work."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield
