"""Resuming a DeepSpeed ZeRO-1/2 run at another world size, through DeepSpeed's universal checkpoint.

A DeepSpeed checkpoint holds each rank's partition of the flat optimizer state, so it loads only at the
data-parallel size that wrote it. DeepSpeed's `ds_to_universal` rewrites it as one file per parameter and state
(`zero/<param>/fp32.pt`, `exp_avg.pt`, ...); an engine initialised with `checkpoint.load_universal: true` loads that
at any world size. Here:

    universal = resumes_at_new_world(run_dir, cfg, world)   # before deepspeed.initialize: the newest checkpoint's
    ds_config = with_universal(ds_config, universal)         #   world differs -> checkpoint.load_universal = true
    load_dir, tag = universal_source(step_dir)               # rank 0 converts into checkpoints/step_N.universal.tmp/,
    engine.load_checkpoint(load_dir, tag, ...)               #   every rank loads it,
    finish_universal(step_dir, engine.module, safe_load)     #   buffers restored, the copy removed

The converted copy sits beside the step directory (a step directory holds only what its manifest lists) and ends in
`.tmp`, so a crash leaves nothing the checkpoint manager would mistake for a checkpoint (it prunes `*.tmp`). Our
trainer state (data position, schedule, RNG) is world-size independent and comes from the step directory as usual.
ZeRO-3 is not converted here: it resumes at the world size that wrote it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from mythos.errors import UserError
from mythos.parallel.ranks import rank as _rank

UNIVERSAL_STAGES = (1, 2)
SUFFIX = ".universal.tmp"


def _saved_engine_state(run_dir: Path) -> dict[str, Any] | None:
    """The `engine` entry of the trainer state of the checkpoint `latest` names (None: no readable checkpoint; the
    checkpoint manager reports damage when it loads)."""
    root = run_dir / "checkpoints"
    try:
        step_dir = root / (root / "latest").read_text().strip()
        return json.loads((step_dir / "trainer_state.json").read_text()).get("engine")
    except (OSError, ValueError, AttributeError):
        return None


def resumes_at_new_world(run_dir: Path, backend: str, zero_stage: int, world_size: int) -> bool:
    """Whether the run's newest checkpoint was written by this backend and ZeRO stage (1 or 2) at another world
    size: then it is loaded through the universal checkpoint."""
    saved = _saved_engine_state(run_dir)
    return (isinstance(saved, dict) and saved.get("backend") == backend == "deepspeed"
            and saved.get("zero_stage") == zero_stage in UNIVERSAL_STAGES
            and saved.get("world_size") not in (None, world_size))


def with_universal(ds_config: dict[str, Any], universal: bool) -> dict[str, Any]:
    """DeepSpeed's switch for loading universal checkpoints (read at initialize)."""
    if not universal:
        return ds_config
    return {**ds_config, "checkpoint": {**ds_config.get("checkpoint", {}), "load_universal": True}}


def _ds_to_universal():
    """deepspeed.checkpoint.ds_to_universal.main (DeepSpeed's converter; tested with deepspeed 0.19.8)."""
    try:
        from deepspeed.checkpoint import ds_to_universal
    except ImportError as e:
        raise UserError(f"deepspeed: deepspeed.checkpoint.ds_to_universal not importable ({e}); mythos is tested "
                        f"with deepspeed 0.19.8") from None
    if not callable(getattr(ds_to_universal, "main", None)):
        raise UserError("deepspeed: deepspeed.checkpoint.ds_to_universal.main not found (mythos is tested with "
                        "deepspeed 0.19.8): install that version")
    return ds_to_universal.main


def convert(step_dir: Path, out_dir: Path) -> None:
    """`ds_to_universal` of one checkpoint, in this process (one worker: no fork next to the process group), its
    console output silenced; written into `out_dir`.part, then renamed."""
    main = _ds_to_universal()
    part = out_dir.with_name(out_dir.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    args = argparse.Namespace(input_folder=str(step_dir), output_folder=str(part), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        main(args)
    (part.parent / "latest_universal").unlink(missing_ok=True)  # its pointer for tag-less loads: we pass the tag
    os.replace(part, out_dir)


def universal_source(step_dir: Path) -> tuple[str, str]:
    """(load_dir, tag) of the universal form of checkpoint `step_dir`: rank 0 converts, every rank waits. A failure
    on rank 0 is raised on every rank (the checkpoint manager then falls back or stops)."""
    out_dir = step_dir.with_name(step_dir.name + SUFFIX)
    problem = None
    if _rank() == 0:
        try:
            convert(step_dir, out_dir)
        except Exception as e:  # noqa: BLE001 - reported on every rank below
            problem = f"{step_dir}: conversion to DeepSpeed's universal checkpoint failed: {type(e).__name__}: {e}"
    if dist.is_available() and dist.is_initialized():
        box = [problem]
        dist.broadcast_object_list(box, src=0)
        problem = box[0]
    if problem:
        raise ValueError(problem)
    return str(out_dir.parent), out_dir.name


def finish_universal(step_dir: Path, module, load_file: Callable[[Path], Any]) -> None:
    """After DeepSpeed's universal load: restore the module's buffers (the MoE routing bias), which DeepSpeed 0.19.8
    does not (it skips `load_module_state_dict` for universal checkpoints and restores only parameters, from
    zero/), from the step's model-states file read with `load_file` (weights_only); then remove the converted copy
    once every rank has loaded it."""
    states = sorted(step_dir.glob("*mp_rank_00_model_states.pt"))
    if not states:
        raise FileNotFoundError(f"{step_dir}: no DeepSpeed model-states file (*mp_rank_00_model_states.pt)")
    saved = load_file(states[0])["module"]
    with torch.no_grad():
        for name, buf in module.named_buffers():  # saved under state-dict names: no wrapper prefixes
            name = name.replace("_checkpoint_wrapped_module.", "").replace("_orig_mod.", "")
            if name in saved:
                buf.copy_(saved[name])
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    if _rank() == 0:
        shutil.rmtree(step_dir.with_name(step_dir.name + SUFFIX), ignore_errors=True)

