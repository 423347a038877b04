"""Stop signals: the process-wide flag keeps the handler it replaces (submitit's), and a signal during start-up
(before torch is even imported) stops the run at its first step with exit 75 instead of killing it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import REPO, read_metrics, train_args


def test_stop_flag_keeps_the_replaced_handler_and_records_the_first_signal():
    from mythos.train import signals

    seen = []
    old = {s: signal.signal(s, lambda n, f: seen.append(n)) for s in signals.SIGNALS}
    try:
        flag = signals.StopFlag().install()
        assert set(flag.previous) == set(signals.SIGNALS)
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.signum == signal.SIGUSR2 and seen == []
        flag.previous[signal.SIGUSR2](signal.SIGUSR2, None)  # what launch/job.py hands over to
        assert seen == [signal.SIGUSR2]
        flag.clear()
        assert flag.signum is None
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _catches(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler for `sig` (SigCgt in /proc/PID/status)."""
    try:
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        return False
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(mask >> (sig - 1) & 1)


def test_signal_during_startup_exits_75_after_one_step(prepared_data, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", *train_args(run, prepared_data, 10)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _catches(proc.pid, signal.SIGUSR1):  # the handler is up: it comes before torch is imported
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.005)
    assert not (run / "metrics.jsonl").exists()
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err
    assert "stop requested (signal 10); checkpointed step 1; exit 75" in out
    assert sorted(read_metrics(run)) == [1]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000001"
