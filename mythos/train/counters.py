"""The run's counters as a checkpointed part (state_dict / load_state_dict, like the data loader): the step, the
tokens trained on, and the model it trains (its vocab must match a checkpoint's, model_config is what readers of a
checkpoint rebuild the model from)."""
from __future__ import annotations

import dataclasses
from typing import Any

from mythos.model import ModelConfig


class RunCounters:
    """`flat`: its fields are top-level keys of trainer_state.json (where checkpoints have always kept them), not
    nested under its name (Engine.save)."""

    flat = True

    def __init__(self, model_config: ModelConfig) -> None:
        self.model_config = model_config
        self.step, self.tokens_seen = 0, 0

    def state_dict(self) -> dict[str, Any]:
        return {"tokens_seen": self.tokens_seen, "vocab_size": self.model_config.vocab_size,
                "model_config": dataclasses.asdict(self.model_config), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """ValueError if the checkpoint's vocab differs from this run's (Engine.load names the checkpoint)."""
        vocab = self.model_config.vocab_size
        if state.get("vocab_size", vocab) != vocab:
            raise ValueError(f"checkpoint vocab {state['vocab_size']} differs from the data's {vocab}")
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
