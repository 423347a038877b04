"""The model + optimizer files of a checkpoint, as a strategy of CheckpointManager (manager.py): `Payload` is what
the manager asks of one; `DCPPayload` writes and reads torch.distributed.checkpoint (DCP) shards, hashing each rank's
shards as they are written (manifest.py) and reading through safe_pickle.py. Model and optimizer go through DCP's
get/set_state_dict, so plain, FSDP2-sharded and expert-parallel models save and load at any world size."""
from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from mythos.checkpoint import manifest
from mythos.checkpoint.safe_pickle import SafeFileSystemReader, SafeLoadPlanner
from mythos.parallel.ranks import distributed, rank

FaultHook = Callable[[str, int], None]


class Payload:
    """What a checkpoint strategy provides (DCP, DeepSpeed)."""

    required_files: tuple[str, ...] = ("trainer_state.json",)  # what a complete checkpoint's manifest must list

    def write(self, tmp: Path, step: int, model, optimizer, trainer_state: dict[str, Any],
              fault_hook: FaultHook) -> None:
        raise NotImplementedError

    def read(self, path: Path, model, optimizer) -> None:
        """Model (+ optimizer, unless None: inference) in place from checkpoint `path`."""
        raise NotImplementedError

    def enable_async(self) -> None:
        raise NotImplementedError(f"{type(self).__name__}: no background saves")

    def write_async(self, tmp: Path, step: int, model, optimizer, fault_hook: FaultHook) -> Future:
        raise NotImplementedError(f"{type(self).__name__}: no background saves")


class _HashingWriter(FileSystemWriter):
    """DCP's FileSystemWriter that hashes this rank's shards right after writing them (see manifest.py)."""

    def __init__(self, path: Path, step: int, fault_hook: FaultHook):
        super().__init__(path)
        self.step, self.fault_hook = step, fault_hook

    def write_data(self, plan, planner):
        fut = super().write_data(plan, planner)
        names = sorted({r.storage_data.relative_path for r in fut.wait()})
        manifest.write_rank_hashes(Path(self.path), rank(), names)
        self.fault_hook("checkpoint_write", self.step)  # tests: a kill with the shards written, nothing committed
        return fut


class DCPPayload(Payload):
    required_files = ("trainer_state.json", ".metadata")

    def __init__(self) -> None:
        self._async_group = None
        self._stager = None

    def enable_async(self) -> None:
        # Background writes run their collectives on a group of their own, never interleaved with training's.
        self._async_group = dist.new_group(backend="gloo") if distributed() else None
        # One stager for the run: it keeps its staging buffers between saves (save() waits for the previous write
        # first, so a buffer is never refilled while being written); 2-3x shorter stalls than fresh buffers here.
        self._stager = DefaultStager(StagingOptions(use_pinned_memory=torch.cuda.is_available(),
                                                    use_shared_memory=False, use_async_staging=False,
                                                    use_non_blocking_copy=False))

    def write(self, tmp: Path, step: int, model, optimizer, trainer_state: dict[str, Any],
              fault_hook: FaultHook) -> None:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, storage_writer=_HashingWriter(tmp, step, fault_hook))

    def write_async(self, tmp: Path, step: int, model, optimizer, fault_hook: FaultHook) -> Future:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        return dcp.async_save({"model": model_sd, "optim": optim_sd},
                              storage_writer=_HashingWriter(tmp, step, fault_hook),
                              process_group=self._async_group, async_stager=self._stager)

    def read(self, path: Path, model, optimizer) -> None:
        opts = StateDictOptions(strict=True)
        reader, planner = SafeFileSystemReader(str(path)).check(), SafeLoadPlanner()
        if optimizer is None:  # inference: the model part of the checkpoint only
            state = {"model": get_model_state_dict(model, options=opts)}
            dcp.load(state, storage_reader=reader, planner=planner)
            set_model_state_dict(model, state["model"], options=opts)
        else:
            model_sd, optim_sd = get_state_dict(model, optimizer, options=opts)
            state = {"model": model_sd, "optim": optim_sd}
            dcp.load(state, storage_reader=reader, planner=planner)
            set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                           options=opts)
