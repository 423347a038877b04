"""The checkpoint manager: checkpoints in `run.dir/checkpoints/step_NNNNNNN/` with torch.distributed.checkpoint (DCP).

Writing: every rank writes into `step_NNNNNNN.tmp/` (its RNG state, its DCP shards and their hashes), rank 0 adds the
trainer state (JSON) and, once every rank's write is complete, the manifest (manifest.py); then it renames the
directory and replaces the `latest` pointer atomically. A kill at any moment leaves `latest` on a complete checkpoint.
With `checkpoint.async_save` the training loop waits only for DCP's in-memory copy; the write runs in a background
thread and rank 0 commits (manifest, rename, `latest`) at the first step boundary after it finished.
A failed write (disk full) removes the partial directory and stops the run with one line; `latest` is untouched.

The model + optimizer files are a strategy (`Payload`): DCP here (dcp.py), DeepSpeed's own files (deepspeed.py).

Reading: candidates are `latest`'s target, then older checkpoints, newest first. Each is verified against its manifest
(hashing split over the ranks), then loaded through safe_pickle.py (no code from the files); the first that every
rank verified and loaded wins, so all ranks agree. Damage falls back with one line; a file that tries to run code
stops with one line. Model and optimizer go through DCP's get/set_state_dict, so plain, FSDP2-sharded and
expert-parallel models save and load at any world size.
"""
from __future__ import annotations
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import warnings
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

import torch
from torch.distributed.checkpoint import CheckpointException

from mythos.checkpoint import manifest
from mythos.checkpoint.dcp import DCPPayload, Payload
from mythos.checkpoint.safe_pickle import UnsafeCheckpoint
from mythos.data.atomic import atomic_write
from mythos.errors import UserError
from mythos.parallel.ranks import agree, barrier, rank, world

STEP_DIR = re.compile(r"^step_(\d{7})$")
# Single-process runs use DCP without a process group on purpose.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")


def _disk_full(path: Path) -> bool:
    """torch's zip writer reports a full disk as "unexpected pos" without errno: ask the filesystem instead."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1 << 20


def reason(e: BaseException, written: Path | None = None) -> tuple[str, str]:
    """(kind, first line) of an exception, looking inside DCP's per-rank CheckpointException. `written`: the
    directory a failed write went to (checked for a full disk)."""
    if isinstance(e, CheckpointException):
        inner = [exc for exc, _ in e.failures.values()]
        for exc in inner:
            if isinstance(exc, UnsafeCheckpoint):
                return "unsafe", str(exc)
        e = inner[0] if inner else e
    if isinstance(e, UnsafeCheckpoint):
        return "unsafe", str(e)
    if (isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left on device" in str(e)
            or written is not None and _disk_full(written)):
        return "nospace", "disk full (ENOSPC)"
    return "damaged", f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"


def rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class CheckpointManager:
    """The protocol (tmp dir -> manifest -> rename -> atomic `latest` -> prune; verify -> load -> fall back), with
    the model + optimizer files written and read by its `payload` strategy: DCPPayload (FSDP) by default, or
    DeepSpeed's (mythos/checkpoint/deepspeed.py)."""

    def __init__(self, run_dir: str | Path, keep: int, fault_hook: Callable[[str, int], None] | None = None,
                 async_save: bool = False, say: Callable[[str], None] | None = None,
                 check: Callable[[Path, dict[str, Any]], None] | None = None, payload: Payload | None = None):
        self.root = Path(run_dir) / "checkpoints"
        self.payload = payload or DCPPayload()
        self.required_files = self.payload.required_files  # what a complete checkpoint's manifest must list
        self.check = check  # the engine's "can I resume this?" (UserError: a config mismatch, not damage)
        self.keep = keep
        self.fault_hook = fault_hook or (lambda where, step: None)
        self.say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.loaded_from: Path | None = None
        self.async_save = async_save
        if async_save:
            self.payload.enable_async()
        self._pending: tuple[int, Future, list[Any]] | None = None  # (step, write future, [commit error])

    # ----------------------------------------------------------------------------------------------------- reading
    def latest_dir(self) -> Path | None:
        """The directory `latest` names (None without a pointer); verification happens in load()."""
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        name = pointer.read_text(errors="replace").strip()
        return self.root / name if STEP_DIR.match(name) else None

    def complete_steps(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir())

    def candidates(self) -> list[Path]:
        """`latest`'s target, then older checkpoints newest first (all of them if the pointer is unusable)."""
        latest = self.latest_dir()
        steps = self.complete_steps()
        if latest is not None and latest.is_dir():
            top = int(latest.name[5:])
            return [latest] + [self.root / f"step_{s:07d}" for s in reversed(steps) if s < top]
        return [self.root / f"step_{s:07d}" for s in reversed(steps)]

    def resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """The trainer state of the newest checkpoint that verifies and loads (model, optimizer loaded in place);
        None when the run has no checkpoint yet."""
        if not self.candidates() and not (self.root / "latest").exists():
            return None
        return self.load(model, optimizer)

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
             path: Path | None = None) -> dict[str, Any]:
        """Load model (+ optimizer) in place from `path`, or from the newest checkpoint that verifies and loads;
        returns the trainer state dict. Without an optimizer only the model part is read (inference)."""
        tried = [Path(path)] if path is not None else self.candidates()
        if not tried:
            raise UserError(f"{self.root}: no checkpoint found")
        for i, cand in enumerate(tried):
            problem = agree(self._verify(cand))
            state = None
            if problem is None:
                try:
                    state = self._load_one(cand, model, optimizer)
                except UserError as e:  # the engine cannot resume this checkpoint: a config mismatch, no fallback
                    problem = ("incompatible", str(e))
                except (CheckpointException, Exception) as e:  # noqa: BLE001 - anything read from disk may be bad
                    kind, msg = reason(e)
                    problem = (kind, msg if kind == "unsafe" else f"{cand}: loading failed: {msg}")
                problem = agree(problem)
            if problem is None:
                self.loaded_from = cand
                return state
            kind, msg = problem
            if kind in ("unsafe", "incompatible"):
                raise UserError(msg)
            rest = tried[i + 1:]
            if rank() == 0:
                self.say(f"warning: checkpoint {cand.name} unusable: {msg}" +
                         (f"; trying {rest[0].name}" if rest else ""))
        raise UserError(f"{self.root}: no checkpoint verifies and loads (tried {', '.join(p.name for p in tried)}); "
                        f"nothing was deleted")

    def _verify(self, path: Path) -> tuple[str, str] | None:
        if not path.is_dir():
            return "damaged", f"{path}: not a directory"
        try:
            msg = manifest.verify(path, rank(), world(), self.required_files)
        except OSError as e:  # unreadable file, I/O error
            msg = f"{path}: {type(e).__name__}: {e}"
        return ("damaged", msg) if msg else None

    def _load_one(self, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
        try:
            trainer_state = json.loads((path / "trainer_state.json").read_text())
        except json.JSONDecodeError as e:  # name the file in the fallback warning
            raise ValueError(f"{path / 'trainer_state.json'}: invalid JSON ({e})") from None
        if not isinstance(trainer_state, dict) or not isinstance(trainer_state.get("step"), int):
            raise ValueError(f"{path / 'trainer_state.json'}: expected a JSON object with an integer 'step'")
        if self.check is not None and optimizer is not None:
            self.check(path, trainer_state)
        self.payload.read(path, model, optimizer)
        rng_file = path / f"rng_rank{rank():05d}.pt"
        if rng_file.is_file():
            trainer_state["rng"] = torch.load(rng_file, weights_only=True)
        return trainer_state

    # ----------------------------------------------------------------------------------------------------- writing
    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             trainer_state: dict[str, Any]) -> Path:
        """Write checkpoint `step` (in the background with async_save; commit() then happens in poll()/wait())."""
        self.wait()  # at most one write in flight
        name = f"step_{step:07d}"
        tmp = self.root / f"{name}.tmp"
        if rank() == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
        barrier()
        problem = None
        try:  # small per-rank files first; every rank must know they worked before DCP's collectives start
            tmp.mkdir(parents=True, exist_ok=True)
            torch.save(rng_state(), tmp / f"rng_rank{rank():05d}.pt")
            if rank() == 0:
                (tmp / "trainer_state.json").write_text(json.dumps({**trainer_state, "step": step}, indent=1))
        except (OSError, RuntimeError) as e:
            problem = reason(e, self.root)
        self._raise_if(agree(problem), step, tmp)
        if self.async_save:
            self._pending = (step, self.payload.write_async(tmp, step, model, optimizer, self.fault_hook), [])
            return self.root / name
        try:
            self.payload.write(tmp, step, model, optimizer, trainer_state, self.fault_hook)
        except (CheckpointException, OSError, RuntimeError) as e:
            problem = reason(e, self.root)
        self._raise_if(agree(problem), step, tmp)
        self._raise_if(agree(self._commit(step) if rank() == 0 else None), step, tmp)
        return self.root / name

    def committed(self, step: int) -> bool:
        """Whether checkpoint `step` is what `latest` names or the write in flight (an older damaged directory of
        that name does not count)."""
        in_flight = self._pending is not None and self._pending[0] == step
        return in_flight or self.latest_dir() == self.root / f"step_{step:07d}"

    def poll(self) -> None:
        """At a step boundary: rank 0 commits a finished background write (no collective: rank 0's DCP future is
        done only after every rank's shards are written). Failures surface in wait(), on every rank together."""
        if self._pending and rank() == 0 and self._pending[1].done() and not self._pending[2]:
            step, fut, errors = self._pending
            if fut.exception() is None:
                errors.append(self._commit(step) or ("committed", ""))

    def wait(self) -> None:
        """Block until the background write (if any) is written and committed; raise its failure on every rank."""
        if self._pending is None:
            return
        step, fut, errors = self._pending
        self._pending = None
        problem = None
        try:
            fut.result()
        except (CheckpointException, OSError, RuntimeError) as e:
            problem = reason(e, self.root)
        problem = agree(problem)
        tmp = self.root / f"step_{step:07d}.tmp"
        self._raise_if(problem, step, tmp)
        if rank() == 0 and not errors:
            errors.append(self._commit(step) or ("committed", ""))
        self._raise_if(agree(errors[0] if errors and errors[0][0] != "committed" else None), step, tmp)

    def _commit(self, step: int) -> tuple[str, str] | None:
        """Rank 0: manifest, rename into place, move `latest`, prune. A problem instead of an exception."""
        name = f"step_{step:07d}"
        final, tmp = self.root / name, self.root / f"{name}.tmp"
        try:
            manifest.write_manifest(tmp, step)
            if final.exists():  # re-saving the same step (e.g. final == last interval checkpoint)
                shutil.rmtree(final)
            os.replace(tmp, final)
            atomic_write(self.root / "latest", name + "\n")
        except OSError as e:
            return reason(e, self.root)
        if self.async_save:
            self.say(f"checkpoint step {step} written in the background, committed -> {final}")
        self._prune(keep_name=name)
        return None

    def _raise_if(self, problem: tuple[str, str] | None, step: int, tmp: Path) -> None:
        """A failed save: rank 0 removes the partial directory; every rank stops with the same one line."""
        if problem is None:
            return
        if rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            (self.root / "latest.tmp").unlink(missing_ok=True)
        latest = self.latest_dir()
        raise UserError(f"checkpoint step {step}: writing {tmp} failed: {problem[1]}; removed it, `latest` still "
                        f"names {latest.name if latest else 'nothing'}" +
                        ("; free space and re-run to resume" if problem[0] == "nospace" else ""))

    def _prune(self, keep_name: str) -> None:
        for p in self.root.iterdir():
            if p.name.endswith(".tmp") and p.name != "latest.tmp" and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)  # leftovers of a save killed midway
        steps = self.complete_steps()
        for s in steps[: max(0, len(steps) - self.keep)]:
            if f"step_{s:07d}" != keep_name:
                shutil.rmtree(self.root / f"step_{s:07d}", ignore_errors=True)
