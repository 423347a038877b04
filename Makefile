# make test : venv + install + pytest (what CI runs)     make demo : prep -> train -> eval -> generate on CPU
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN ?= runs/demo
DATA ?= data/stdlib

.PHONY: venv test demo clean slurm-packages

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --no-compile torch==2.13.0  # --no-compile: modules are byte-compiled when first imported
	$(BIN)/pip install -q --no-compile --no-build-isolation deepspeed==0.19.8  # builds against the torch above
	$(BIN)/pip install -q --no-compile -e '.[test,hf]'
	touch $(STAMP)

venv: $(STAMP)

# lint-imports first (the layers in pyproject's [tool.importlinter]; a violation fails the target, the tests still
# run), then two pytest-xdist runs (a test that crashes the interpreter fails alone; the rest still run), side by side:
# the SLURM tests on one worker (their cluster has a fixed path, bridge and ports; their jobs mostly wait on SLURM's
# time limits and requeues), everything else on three workers (worksteal: a worker that runs out takes tests from
# another): many tests wait (on a rank's start, a watchdog, a shared run another worker is making), so a third keeps
# both cores busy (a fourth was slower: 1212 s of tests in a loaded fresh clone against 1136 s with three). The SLURM
# run's output is printed when both are done; the target fails if any step does.
# One torch/OpenMP thread per process: two workers already fill two cores, and on a busy machine an OpenMP team whose
# threads outnumber the free cores waits at every barrier for a descheduled thread (tests that need more set it).
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest --timeout=900
LAUNCH_LOG := .pytest-launch.log
test: $(STAMP) slurm-packages
	@rc=0; \
	$(BIN)/lint-imports || rc=$$?; \
	$(PYTEST) -n 1 --durations=10 tests/launch > $(LAUNCH_LOG) 2>&1 & launch=$$!; \
	$(PYTEST) -n 3 --dist worksteal --durations=30 --ignore=tests/launch tests || rc=$$?; \
	wait $$launch || rc=$$?; \
	echo "== tests/launch (ran alongside the tests above) =="; cat $(LAUNCH_LOG); \
	exit $$rc

# The SLURM tests (tests/launch) start a real two-node SLURM from Debian's packages; they skip with a reason without.
slurm-packages:
	@if command -v slurmctld >/dev/null && command -v munged >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null || \
	  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null; } \
	  || echo "slurm-wlm/munge could not be installed: the SLURM tests will skip"; \
	else echo "slurm-wlm/munge missing and not installable here (needs root and apt-get): the SLURM tests will skip"; fi

demo: $(STAMP)
	test -f $(DATA)/metadata.json || $(BIN)/mythos-prep stdlib --out $(DATA) --vocab-size 4096
	$(BIN)/mythos-train --config configs/tiny-cpu.toml --run.dir $(RUN) --data.path $(DATA)
	$(BIN)/mythos-eval $(RUN) --loops 1,2,4,8,16
	$(BIN)/mythos-generate $(RUN) --prompt "def main(" --loops 8 --max-new-tokens 80 --temperature 0.8 --top-k 40
	@echo "Watch it: $(BIN)/tensorboard --logdir $(RUN)/tb"

clean:
	rm -rf $(VENV) runs
