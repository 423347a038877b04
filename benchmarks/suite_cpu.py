"""Where the test suite's time goes: a pytest plugin that appends each test's wall and CPU seconds (getrusage of the
worker and its waited-for children: the ranks, torchrun, CLIs it ran) to a TSV, and a table of the files that cost
most. CPU, not wall, is what a loaded 2-core CI machine runs out of; a run shared through `made_once` is charged to
the first test that needs it. SLURM jobs run under slurmd, not the test, so tests/launch is undercounted.

    PYTHONPATH=benchmarks CPUPROF_OUT=/tmp/suite_cpu.tsv OMP_NUM_THREADS=1 \
        .venv/bin/python -m pytest -p suite_cpu -n 3 --dist worksteal --ignore=tests/launch tests
    .venv/bin/python benchmarks/suite_cpu.py /tmp/suite_cpu.tsv          # per file, most CPU first
"""
from __future__ import annotations

import os
import resource
import sys
import time
from collections import defaultdict

import pytest


def _cpu_s() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):  # noqa: ARG001 - pytest's hook signature
    t0, c0 = time.monotonic(), _cpu_s()
    yield  # set-up, call and tear-down
    with open(os.environ.get("CPUPROF_OUT", "suite_cpu.tsv"), "a") as f:
        f.write(f"{item.nodeid}\t{time.monotonic() - t0:.1f}\t{_cpu_s() - c0:.1f}\n")


def main(path: str, top: int = 30) -> None:
    cpu, wall, n = defaultdict(float), defaultdict(float), defaultdict(int)
    for line in open(path):
        nodeid, w, c = line.rstrip("\n").split("\t")
        f = nodeid.split("::")[0]
        cpu[f], wall[f], n[f] = cpu[f] + float(c), wall[f] + float(w), n[f] + 1
    print(f"| file | tests | CPU s | wall s |\n|---|---|---|---|")
    for f in sorted(cpu, key=cpu.get, reverse=True)[:top]:
        print(f"| {f} | {n[f]} | {cpu[f]:.1f} | {wall[f]:.1f} |")
    print(f"| all ({len(cpu)} files) | {sum(n.values())} | {sum(cpu.values()):.1f} | {sum(wall.values()):.1f} |")


if __name__ == "__main__":
    main(sys.argv[1])
