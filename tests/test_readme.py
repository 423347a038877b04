"""The README's shell commands, as written, in README order, in one scratch directory (so `mythos-prep` runs before
the `mythos-train` that reads its output, as a newcomer would run them). Cheap ones run with tiny settings appended
(later flags win: a smaller vocab, model and step count); the others are listed with the reason and the test that
covers them. A new README command that is neither run nor listed fails the test."""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from importlib import import_module

import pytest

from tests.conftest import REPO, TINY_MODEL_ARGS, generate_compile_lock

pytestmark = pytest.mark.slow

TINY = {
    "mythos-prep": ["--vocab-size", "300", "--sample-mb", "0.3", "--workers", "1", "--no-progress"],
    "mythos-train": [*TINY_MODEL_ARGS, "--train.steps", "2", "--train.seq_len", "32", "--train.log_interval", "1",
                     "--data.val_batches", "1", "--checkpoint.interval", "0", "--metrics.tensorboard", "false"],
    "mythos-eval": ["--batches", "1"],
    "mythos-generate": ["--max-new-tokens", "4", "--loops", "2"],  # --compile at 16 loops: 80 CPU-s of C++
    "mythos-submit": ["--dry-run"],
    "mythos-research": ["--scale", "tiny"],  # the CPU scale is hours; its runs are tests/research/test_parity.py's
}
SKIP = [  # (pattern, why it is not run here)
    (r"^make (demo|test)\b", "minutes: the demo path is tests/train/test_demo_path.py, make test is the suite"),
    (r"^make venv$", "builds .venv (minutes); the scripts it installs are checked against pyproject.toml here"),
    (r"^source \.venv/bin/activate$", "shell state; the mythos-* names it puts on PATH are checked here"),
    (r"^torchrun .*--parallel\.backend deepspeed", "DeepSpeed at 8 ranks: the engine is tested at 2 ranks in "
                                                   "tests/train/test_deepspeed_*.py"),
    (r"^torchrun ", "read from here and run at its rank count by tests/train/test_world_sizes.py"),
    (r"^sbatch ", "needs a SLURM cluster: tests/launch/test_templates.py"),
    (r"--harness|^HF_HUB_OFFLINE=1 .*lm_eval", "lm-eval: tests/hf/test_harness.py"),
    (r"\.\.\.", "an abbreviation of the command above it"),
]


def readme_commands() -> list[str]:
    """Commands of the ```bash blocks: continuation lines joined, comments and [optional] parts dropped."""
    text = (REPO / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            cmd = re.sub(r"\s+#.*$", "", cmd)
            cmd = re.sub(r"\[[^\]]*\]", "", cmd)
            cmd = " ".join(cmd.split())
            if cmd and not cmd.startswith("#"):
                cmds.append(cmd)
    return cmds


def scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def make_inputs(cwd) -> None:
    """What the prep examples name: corpus/, docs.jsonl, code/, prose.jsonl, a.jsonl, b.jsonl.gz, a saved dataset."""
    import datasets
    texts = [f"def f{i}(x):\n    return x * {i}  # document {i}\n" * 20 for i in range(30)]
    (cwd / "configs").symlink_to(REPO / "configs")
    for d in ("corpus", "code"):
        (cwd / d).mkdir()
        for i, t in enumerate(texts[:10]):
            (cwd / d / f"m{i}.py").write_text(t)
    (cwd / "corpus" / "NOTES").write_text("plain text without an extension\n" * 30)
    (cwd / "corpus" / "more.txt.gz").write_bytes(gzip.compress(texts[10].encode()))
    for name, key in (("docs.jsonl", "text"), ("prose.jsonl", "text"), ("a.jsonl", "text")):
        (cwd / name).write_text("".join(json.dumps({key: t}) + "\n" for t in texts[10:20]))
    (cwd / "b.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps({"body": t}) + "\n"
                                                           for t in texts[20:]).encode()))
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(cwd / "path/to/saved_dataset"))


# Read-only tools (they read a run, a dataset or a config and print or export it) run as their console script's
# main(argv) in the test process, in the scratch directory: one interpreter start instead of one per command (~3 CPU-s
# each). The tools that write what later commands read (prep, train, research) keep a fresh interpreter of their own.
IN_PROCESS = ("mythos-eval", "mythos-generate", "mythos-export", "mythos-submit", "mythos-prep inspect")


def run(cmd: str, cwd, monkeypatch, capfd) -> subprocess.CompletedProcess:
    argv = shlex.split(cmd)
    tool, args = argv[0], argv[1:]
    extra = TINY.get(tool, [])
    if tool == "mythos-prep" and args[0] in ("inspect", "merge"):
        extra = []
    if tool == "mythos-submit" and "--dry-run" in args:
        extra = []
    module, func = scripts()[tool].split(":")
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    if tool == "mythos-submit":  # a preview from a machine without SLURM
        (cwd / "nobin").mkdir(exist_ok=True)
        env["PATH"] = str(cwd / "nobin")
    if not cmd.startswith(IN_PROCESS):
        code = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
        return subprocess.run([sys.executable, "-c", code, *args, *extra], cwd=cwd, env={**os.environ, **env},
                              capture_output=True, text=True, timeout=600)
    with monkeypatch.context() as m:
        m.chdir(cwd)
        for k, v in env.items():
            m.setenv(k, v)
        capfd.readouterr()
        try:  # what the console script does: sys.exit(main(argv))
            rc = getattr(import_module(module), func)([*args, *extra])
        except SystemExit as e:
            rc = e.code
        out, err = capfd.readouterr()
    return subprocess.CompletedProcess([tool, *args, *extra], 0 if rc is None else rc, out, err)


def test_every_readme_command_runs_or_is_accounted_for(tmp_path, monkeypatch, capfd, one_thread, tmp_path_factory,
                                                     worker_id):
    cmds = readme_commands()
    assert len(cmds) > 15
    known = scripts()
    for tool in {c.split()[0] for c in cmds if c.startswith("mythos-")}:
        assert tool in known, f"README names {tool}, which pyproject.toml does not install"
    make_inputs(tmp_path)
    ran, skipped, unknown = [], [], []
    for i, cmd in enumerate(cmds):
        why = next((reason for pat, reason in SKIP if re.search(pat, cmd)), None)
        if cmd in cmds[:i]:
            why = "the same command ran above (first steps, then the user flows)"
        if why:
            skipped.append((cmd, why))
            continue
        if cmd.split()[0] not in known:
            unknown.append(cmd)
            continue
        if cmd.startswith("mythos-train"):  # the README's order: the prep it needs ran before it
            assert (tmp_path / "data" / "stdlib" / "metadata.json").is_file()
        if cmd.startswith("mythos-submit") and "--config" in cmd:
            (tmp_path / "data").mkdir(exist_ok=True)
            if not (tmp_path / "data" / "corpus").exists():  # the big configs' data.path
                (tmp_path / "data" / "corpus").symlink_to(tmp_path / "data" / "stdlib")
        compiles = "--compile" in cmd  # test_generate_cli's graph: one cold inductor compile serves both
        with generate_compile_lock(tmp_path_factory, worker_id) if compiles else contextlib.nullcontext():
            r = run(cmd, tmp_path, monkeypatch, capfd)
        assert r.returncode == 0, f"{cmd}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, f"{cmd}\n{r.stderr[-3000:]}"
        ran.append(cmd)
    assert not unknown, f"README commands this test neither runs nor lists with a reason: {unknown}"
    # what a newcomer's session left behind
    assert (tmp_path / "runs" / "tiny" / "eval_loops.json").is_file()
    assert (tmp_path / "tiny.safetensors").is_file() and (tmp_path / "hf" / "tiny" / "config.json").is_file()
    assert json.loads((tmp_path / "data" / "keys" / "metadata.json").read_text())["sources"][1]["text_key"] == "body"
    assert len(ran) >= 12, ran
    print(f"\n{len(ran)} README commands ran; {len(skipped)} not run here:")
    for cmd, why in skipped:
        print(f"  {cmd[:70]}: {why}")
