"""The shipped multiple-choice task `mythos_python_mc`: 24 Python snippets, each with one valid continuation among
four (the others are syntax from other languages), in mythos/evals/tasks/python_mc.jsonl. A model that learned
Python scores above chance (0.25). lm-eval compares the summed log-likelihood of each continuation after the context;
`reference_mc_accuracy` computes the same with our model and SentencePiece, for the side-by-side check."""
from __future__ import annotations

import json
from pathlib import Path

import torch

MC_TASK = "mythos_python_mc"
MC_DATA = Path(__file__).with_name("tasks") / "python_mc.jsonl"
MC_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {jsonl}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: answer
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def write_mc_task(task_dir: Path) -> list[dict]:
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / f"{MC_TASK}.yaml").write_text(MC_YAML.format(task=MC_TASK, jsonl=json.dumps(str(MC_DATA))))
    return [json.loads(line) for line in MC_DATA.read_text().splitlines() if line.strip()]


def _encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split (HFLM._encode_pair): trailing whitespace of the context moves to the continuation, and the
    continuation's ids are those of context + continuation after the context's own ids."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
    whole, ctx = tok.encode(context + continuation), tok.encode(context)
    return ctx, whole[len(ctx):]


@torch.no_grad()
def reference_mc_accuracy(model, tok, items: list[dict], n_loops: int | None) -> float:
    correct = 0
    for item in items:
        scores = []
        for choice in item["choices"]:
            ctx, cont = _encode_pair(tok, item["context"], choice)
            ids = torch.tensor([ctx + cont])
            logp = model(ids[:, :-1], n_loops=n_loops).logits_BTV[0, -len(cont):].double().log_softmax(-1)
            scores.append(float(logp.gather(-1, torch.tensor(cont)[:, None]).sum()))
        correct += int(max(range(len(scores)), key=scores.__getitem__) == item["answer"])
    return correct / len(items)
