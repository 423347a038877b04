"""Checkpoints, below train and evals: the manager and its protocol (manager.py), the manifest (manifest.py), safe
loading (safe_pickle.py), the payload strategies (dcp.py for FSDP, deepspeed.py for ZeRO), and reading a run or an
export for inference (load.py)."""
from mythos.checkpoint.dcp import DCPPayload, Payload
from mythos.checkpoint.manager import CheckpointManager, rng_state, set_rng_state
from mythos.checkpoint.safe_pickle import UnsafeCheckpoint

__all__ = ["CheckpointManager", "DCPPayload", "Payload", "UnsafeCheckpoint", "rng_state", "set_rng_state"]
