"""Several `main(argv)` runs in ONE launch: each Python process that imports torch and mythos costs ~3 CPU-s, so the
tests that need many trainer/CLI runs pay the start-up (and, at N ranks, the process group) once per launch.

A command is [MODULE, *argv]: `MODULE.main(argv)` runs as `python -m MODULE argv...` would, with its own stdout and
stderr (file descriptors 1 and 2, so warnings and C-level output land there too), its own extra environment
(MYTHOS_FAULTS is re-read per command) and its own exit code, on every rank. The process group stays up between
commands (DistEnv.shutdown and mythos.errors.exit_after_distributed are no-ops until the last one); the LAST command
exits through its real exit path, so its exit code (75 after SIGTERM, 2 after a UserError) is the process's.

    run_mains(["mythos.train.cli", ...], ["zipfile", "-c", ...], nproc=1)   -> one CompletedProcess per command
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.parallel.dist_run import start, wait


class Mains:
    """A started launch (`start_mains`): `procs` (one per rank, e.g. to signal one mid-run) and `wait`."""

    def __init__(self, commands: list[list], nproc: int, env_extra: list[dict] | None, merge_stderr: bool):
        self.commands = [[str(c[0]), *map(str, c[1:])] for c in commands]
        self.dir = Path(tempfile.mkdtemp(prefix="mains_"))
        envs = env_extra or [{}] * len(commands)
        spec = {"dir": str(self.dir), "merge": merge_stderr, "commands": [[c[0], c[1:], envs[i]]
                                                                          for i, c in enumerate(self.commands)]}
        self.merge_stderr = merge_stderr
        self.procs = start(nproc, ["-m", "tests.mains", json.dumps(spec)])

    def wait(self, timeout: float = 900, check: bool = False) -> list[subprocess.CompletedProcess]:
        """Per command: rank 0's exit code, stdout and stderr (None if merged into stdout), and `rcs`, every rank's
        exit code. A command before the last that raised (not SystemExit) fails here with its output. check: every
        rank of every command must exit 0."""
        try:
            rcs, outs = wait(self.procs, timeout)
            results = [self._result(i, rcs, outs) for i in range(len(self.commands))]
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
        bad = [r for r in results if r.rcs != [0] * len(rcs)]
        if check and bad:
            raise AssertionError(f"{bad[0].args[:1]} exited {bad[0].rcs}:\n{bad[0].stdout[-4000:]}"
                                 f"{bad[0].stderr[-3000:] if bad[0].stderr else ''}")
        return results

    def _result(self, i: int, rcs: list[int], outs: list[str]) -> subprocess.CompletedProcess:
        last = i == len(self.commands) - 1
        codes, texts = [], []
        for rank, proc_rc in enumerate(rcs):
            f = self.dir / f"{i}.{rank}"  # the child's files: f.out, f.err, f.rc
            texts.append([Path(f"{f}{s}").read_text() if Path(f"{f}{s}").is_file() else "" for s in (".out", ".err")])
            if last:
                codes.append(proc_rc)
            elif Path(f"{f}.rc").is_file():
                codes.append(json.loads(Path(f"{f}.rc").read_text()))
            else:  # it raised: the process ended there
                raise AssertionError(f"rank {rank} of {self.commands[i][:1]} crashed:\n{texts[-1][0][-3000:]}"
                                     f"{texts[-1][1][-3000:]}{outs[rank][-3000:]}")
        r = subprocess.CompletedProcess(self.commands[i], codes[0], texts[0][0],
                                        None if self.merge_stderr else texts[0][1])
        r.rcs = codes
        return r


def start_mains(*commands: list, nproc: int = 1, env_extra: list[dict] | None = None,
                merge_stderr: bool = False) -> Mains:
    """Start the commands in one launch of `nproc` ranks (one process per rank, as srun starts them); `env_extra`:
    one dict per command; merge_stderr: each command's stderr into its stdout, interleaved as a terminal shows it."""
    return Mains(list(commands), nproc, env_extra, merge_stderr)


def run_mains(*commands: list, nproc: int = 1, env_extra: list[dict] | None = None, timeout: float = 900,
              merge_stderr: bool = False, check: bool = False) -> list[subprocess.CompletedProcess]:
    """`start_mains(...).wait(timeout, check)`: one CompletedProcess per command."""
    return start_mains(*commands, nproc=nproc, env_extra=env_extra, merge_stderr=merge_stderr).wait(timeout, check)


def _capture(path: Path, merge: bool) -> tuple[list, tuple[int, int]]:
    """Point fds 1 and 2 at path.out / path.err (both at path.out if merged); the files and the saved fds."""
    sys.stdout.flush(), sys.stderr.flush()
    out = open(f"{path}.out", "w")
    err = out if merge else open(f"{path}.err", "w")
    saved = os.dup(1), os.dup(2)
    os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)
    return [out, err], saved


def _restore(files: list, saved: tuple[int, int]) -> None:
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(saved[0], 1), os.dup2(saved[1], 2)
    os.close(saved[0]), os.close(saved[1])
    for f in {id(f): f for f in files}.values():
        f.close()


def _child(spec: dict) -> None:
    """Run the commands one after another in this rank (see the module docstring)."""
    import importlib
    import traceback

    import mythos.errors
    from mythos.parallel import DistEnv
    from mythos.train import faults

    d, rank = Path(spec["dir"]), os.environ.get("RANK", "0")
    shutdown, exit_ = DistEnv.shutdown, mythos.errors.exit_after_distributed
    DistEnv.shutdown, mythos.errors.exit_after_distributed = lambda self: None, lambda code: None
    commands = spec["commands"]
    for i, (module, argv, env) in enumerate(commands):
        last = i == len(commands) - 1
        saved_env = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        faults._FAULTS, faults._SLOW = faults._parse()
        if last:
            DistEnv.shutdown, mythos.errors.exit_after_distributed = shutdown, exit_
        files, fds = _capture(d / f"{i}.{rank}", spec["merge"])
        try:
            rc = importlib.import_module(module).main(argv)
        except SystemExit as e:  # a UserError: `error: ...` printed, exit code 2
            rc = e.code
        except BaseException:
            if not last:  # into this command's stderr; no .rc file: the parent reports the crash
                traceback.print_exc()
                _restore(files, fds)
            raise  # the last one: its traceback on its stderr and exit code 1, as under `python -m MODULE`
        if last:
            _end(rc)
        _restore(files, fds)
        (d / f"{i}.{rank}.rc").write_text(json.dumps(_code(rc)))
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _code(rc) -> int:
    """The exit code `sys.exit(rc)` gives (a message: printed, 1)."""
    if rc is None or isinstance(rc, int):
        return rc or 0
    print(rc, file=sys.stderr)
    return 1


def _end(rc) -> None:
    """The last command returned instead of exiting: end as its `python -m` would, and after collectives without
    interpreter finalization (mythos.errors.exit_after_distributed)."""
    import torch.distributed as dist

    import mythos.errors
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        mythos.errors.exit_after_distributed(_code(rc))
    sys.exit(rc)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
