"""Shared test helpers for the research experiments."""
from mythos.model import Mythos


def spy_forwards(monkeypatch) -> list[tuple[bool, int | None, int]]:
    """Record (training?, n_loops, bits = tokens - 1) of every Mythos forward."""
    calls = []
    real = Mythos.forward

    def forward(self, tokens_BT, n_loops=None, cache=None):
        calls.append((self.training, n_loops, tokens_BT.shape[1] - 1))
        return real(self, tokens_BT, n_loops=n_loops, cache=cache)

    monkeypatch.setattr(Mythos, "forward", forward)
    return calls
