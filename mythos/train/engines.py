"""build_engine: the engine `parallel.backend` names (engine.py's FSDPEngine or engine_deepspeed.py's
DeepSpeedEngine), in a module of its own so that neither engine module imports the other's."""
from __future__ import annotations

from pathlib import Path

import torch

from mythos.config import Config
from mythos.parallel import DistEnv
from mythos.train.engine import Engine, FSDPEngine
from mythos.train.engine_deepspeed import DeepSpeedEngine


def build_engine(model: torch.nn.Module, cfg: Config, env: DistEnv, run_dir: str | Path | None) -> Engine:
    """The engine `parallel.backend` names, wrapping a freshly built (seeded) model."""
    if cfg.parallel.backend == "deepspeed":
        return DeepSpeedEngine(model, cfg, env, Path(run_dir))
    return FSDPEngine(model, cfg, env, None if run_dir is None else Path(run_dir))
