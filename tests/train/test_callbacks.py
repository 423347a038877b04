"""The trainer's callback list (hooks in list order, record fields merged, one agreement on save/stop) and the
checkpointed parts' trainer_state.json layout (a flat part's fields at the top level, as checkpoints always had)."""
from __future__ import annotations

import pytest

from mythos.model import ModelConfig
from mythos.train.callbacks import Callback, CallbackList
from mythos.train.counters import RunCounters
from mythos.train.engine import parts_state


class Recorder(Callback):
    def __init__(self, name: str, calls: list, fields: dict | None = None, wish: set | None = None) -> None:
        self.name, self.calls, self.fields, self.wish = name, calls, fields, wish or set()

    def on_step_start(self, step: int) -> None:
        self.calls.append((self.name, "start", step))

    def on_step_end(self, step: int, step_time_s: float, **info) -> dict | None:
        self.calls.append((self.name, "end", dict(info["fields"])))
        return self.fields

    def requests(self, step: int) -> set[str]:
        return self.wish


def test_hooks_run_in_list_order_and_fields_merge():
    calls: list = []
    cbs = CallbackList([Recorder("a", calls, {"x": 1}), None, Recorder("b", calls, {"y": 2}), Recorder("c", calls)],
                       "cpu")
    cbs.on_step_start(3)
    cbs.on_step_end(3, 0.1, result=None, loops=None)
    assert calls == [("a", "start", 3), ("b", "start", 3), ("c", "start", 3),
                     ("a", "end", {}), ("b", "end", {"x": 1}), ("c", "end", {"x": 1, "y": 2})]


@pytest.mark.parametrize("wishes,expected", [([set(), set()], (False, False)), ([{"save"}, set()], (False, True)),
                                             ([set(), {"stop"}], (True, False))])
def test_agree_gathers_every_callbacks_requests(wishes, expected):
    cbs = CallbackList([Recorder(str(i), [], wish=w) for i, w in enumerate(wishes)], "cpu")
    assert cbs.agree(1) == expected


class Part:
    def __init__(self, state: dict) -> None:
        self.state = state

    def state_dict(self) -> dict:
        return self.state


def test_trainer_state_layout_and_counters_round_trip():
    counters = RunCounters(ModelConfig.named("tiny"))
    counters.step, counters.tokens_seen = 7, 700
    state = parts_state({"counters": counters, "data": Part({"epoch": 1})})
    assert state["data"] == {"epoch": 1} and state["step"] == 7 and state["tokens_seen"] == 700
    assert state["vocab_size"] == counters.model_config.vocab_size and "counters" not in state
    again = RunCounters(ModelConfig.named("tiny"))
    again.load_state_dict(state)
    assert (again.step, again.tokens_seen) == (7, 700)
    with pytest.raises(ValueError, match="checkpoint vocab 5 differs"):
        again.load_state_dict({**state, "vocab_size": 5})
