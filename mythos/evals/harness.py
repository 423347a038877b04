"""`mythos-eval RUN --harness TASKS`: lm-evaluation-harness on the run exported as a Hugging Face model, once per
loop count (`n_loops` goes to from_pretrained through lm-eval's model_args).

Two local tasks need no download: `mythos_python_mc` (shipped multiple choice, mythos/evals/harness_mc.py) and
`mythos_val`: a JSONL of the run's validation documents (decoded from the val shards; each re-encodes to the same ids)
scored with `loglikelihood_rolling`, each document after one EOS (documents follow an EOS in our shards) in windows of
the training seq_len. Next to lm-eval's number the table prints our own model's nats/token on the same token ids and
windows (`reference_nats_per_token`), computed without transformers or lm-eval: the two agree to ~1e-6
(tests/hf/test_harness.py); likewise `mythos_acc` for the multiple choice. This is a per-document loss, not
mythos-eval's packed-window validation loss: lm-eval feeds text, and windows cut mid-token or across an EOS do not
re-encode (fed the packed stream, the same windowing gives mythos-eval's number exactly: the test shows that too).
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from mythos.errors import UserError
from mythos.hf.export import load_source, write_hf
from mythos.evals.harness_mc import MC_TASK, reference_mc_accuracy, write_mc_task

LOCAL_TASK = "mythos_val"
TASK_UTILS = Path(__file__).with_name("harness_task.py")
TASK_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {jsonl}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: text
process_results: !function mythos_val_utils.process_results
metric_list:
  - metric: nats_per_token
    aggregation: !function mythos_val_utils.nats_per_token
    higher_is_better: false
  - metric: bits_per_byte
    aggregation: !function mythos_val_utils.bits_per_byte
    higher_is_better: false
"""


def build_local_task(data_dir: str | Path, tok_path: Path, task_dir: Path, max_docs: int) -> list[list[int]]:
    """Write the mythos_val task (YAML, JSONL, metric functions) into task_dir; returns each document's ids."""
    from mythos.data import Tokenizer, open_split
    sp = Tokenizer(tok_path)
    docs: list[tuple[str, list[int]]] = []
    for ds in open_split(data_dir, "val"):
        for i in range(len(ds)):
            ids = [int(t) for t in ds[i]]
            if ids and ids[-1] == sp.eos_id:
                ids = ids[:-1]
            text = sp.decode(ids)
            enc = sp.encode(text)
            if enc:
                docs.append((text, enc))
            if len(docs) >= max_docs:
                break
        if len(docs) >= max_docs:
            break
    if not docs:
        raise UserError(f"{data_dir}: the val split has no non-empty documents for the {LOCAL_TASK} task")
    task_dir.mkdir(parents=True, exist_ok=True)
    jsonl = task_dir / f"{LOCAL_TASK}.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "n_tokens": len(e)}) + "\n" for t, e in docs))
    (task_dir / f"{LOCAL_TASK}.yaml").write_text(TASK_YAML.format(task=LOCAL_TASK, jsonl=json.dumps(str(jsonl))))
    shutil.copyfile(TASK_UTILS, task_dir / "mythos_val_utils.py")
    return [e for _, e in docs]


@torch.no_grad()
def reference_nats_per_token(model, docs: list[list[int]], prefix: int, max_len: int, n_loops: int | None) -> float:
    """Our model's mean NLL per token over `docs`, each predicted after `prefix` in windows of max_len tokens: the
    first window predicts its max_len tokens, each later one its new tokens with the max_len before as context."""
    model.eval()
    nll, count = 0.0, 0
    for ids in docs:
        first = min(max_len, len(ids))
        windows = [([prefix] + ids[: first - 1], ids[:first])]
        done = first
        while done < len(ids):
            end = min(len(ids), done + max_len)
            windows.append((ids[end - max_len - 1: end - 1], ids[done:end]))
            done = end
        for inp, tgt in windows:
            logits = model(torch.tensor([inp]), n_loops=n_loops).logits_BTV[0, -len(tgt):].double()
            nll += float(F.cross_entropy(logits, torch.tensor(tgt), reduction="sum"))
            count += len(tgt)
    return nll / count


def run_harness(run: str | Path, tasks: list[str], loops: list[int], out_dir: Path, max_docs: int = 64,
                limit: int | None = None) -> dict:
    """Export RUN to out_dir/hf, run lm-eval on `tasks` at each loop count; lm-eval writes its results JSON under
    out_dir/loops_N/. Returns {loops: {task: {metric: value}}} and prints a table."""
    try:
        import lm_eval  # noqa: F401
    except ImportError as e:
        raise UserError(f"--harness needs the optional extra: pip install -e '.[hf]' ({e})") from None
    model, mcfg, tok_path, seq_len = load_source(run)
    created = not out_dir.exists()
    try:
        return _run(model, mcfg, tok_path, seq_len, run, tasks, loops, out_dir, max_docs, limit)
    except UserError:
        if created:  # bad input found on the way: leave nothing behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _run(model, mcfg, tok_path, seq_len, run, tasks, loops, out_dir, max_docs, limit) -> dict:
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    from mythos.data import parse_spec
    hf_dir = write_hf(model, mcfg, Path(tok_path), seq_len, out_dir / "hf")
    eos = json.loads((hf_dir / "config.json").read_text())["eos_token_id"]
    docs = mc_items = None
    if LOCAL_TASK in tasks:
        docs = build_local_task(parse_spec(_data_path(run))[0][0], tok_path, out_dir / "tasks", max_docs)
    if MC_TASK in tasks:
        mc_items = write_mc_task(out_dir / "tasks")
    # lm-eval indexes its ~26k built-in task YAMLs (~50 s here) unless told the local ones are all there is
    local = (out_dir / "tasks").is_dir()
    manager = TaskManager(include_path=str(out_dir / "tasks") if local else None,
                          include_defaults=any(t not in (LOCAL_TASK, MC_TASK) for t in tasks))
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"--harness: unknown lm-eval task(s) {', '.join(unknown)} (local: {LOCAL_TASK}, {MC_TASK}; "
                        "others come with lm-eval and may need a download)")
    counts: list[int | None] = [None] if mcfg.mode == "dense" else list(loops)
    summary: dict = {}
    for n in counts:
        args = {"pretrained": str(hf_dir), "trust_remote_code": True, "backend": "causal", "dtype": "float32",
                "device": "cpu", "prefix_token_id": eos, "max_length": seq_len}
        if n is not None:
            args["n_loops"] = n
        tracker = EvaluationTracker(output_path=str(out_dir / f"loops_{n or 0}"))
        res = lm_eval.simple_evaluate(model="hf", model_args=args, tasks=tasks, batch_size=1, limit=limit,
                                      task_manager=manager, evaluation_tracker=tracker, log_samples=False)
        tracker.save_results_aggregated(results=res, samples=None)
        row = {t: {k.split(",")[0]: v for k, v in m.items()
                   if isinstance(v, (int, float)) and "stderr" not in k and k != "sample_len"}
               for t, m in res["results"].items()}
        if docs is not None:
            row[LOCAL_TASK]["mythos_nats_per_token"] = reference_nats_per_token(model, docs, eos, seq_len, n)
        if mc_items is not None:
            from mythos.data import Tokenizer
            row[MC_TASK]["mythos_acc"] = reference_mc_accuracy(model, Tokenizer(tok_path), mc_items, n)
        summary[str(n or 0)] = row
        _print_row(n, row)
    (out_dir / "harness_summary.json").write_text(json.dumps(summary, indent=1))
    print(f"lm-eval results: {out_dir}/loops_N/; summary: {out_dir / 'harness_summary.json'}")
    return summary


def _data_path(run: str | Path) -> str:
    from mythos.config import build_config, load_toml
    p = Path(run)
    if not (p / "config.toml").is_file():
        raise UserError(f"{p}: --harness {LOCAL_TASK} needs a run directory (its val data)")
    return build_config(load_toml(p / "config.toml")).data.path


def _print_row(n: int | None, row: dict) -> None:
    for task, metrics in row.items():
        vals = ", ".join(f"{k} {v:.6f}" for k, v in sorted(metrics.items()) if math.isfinite(v))
        print(f"loops {n or '-':>3} | {task}: {vals}", flush=True)
