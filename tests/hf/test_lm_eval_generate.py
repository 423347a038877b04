"""lm-eval's `hf` model runs a local generation task (generate_until) with batch size 4 on the HF export: prompts of
different lengths go through transformers' generate as left-padded batches with an attention mask, and every
response equals our own greedy generation of that prompt alone (same tokens, decoded the same way)."""
from __future__ import annotations

import json

import pytest
import torch

from tests.hf.conftest import load_hf, random_export

pytest.importorskip("lm_eval")

PROMPTS = ["def function_3(x, y=3):", "import os", "class A:\n    pass\n", "x = [1, 2,", "return", "if x > 3:\n",
           "while True:\n    ", "print("]
MAX_GEN = 8
TASK = """task: mythos_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {jsonl}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: ""
generation_kwargs:
  until: ["<<never>>"]
  max_gen_toks: {max_gen}
  do_sample: false
metric_list:
  - metric: exact_match
"""


def test_generation_task_batch_4_equals_prompts_alone(prepared_data, tmp_path):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    ours, out = random_export("rdt-mla", prepared_data / "tokenizer.model", tmp_path / "gen_export")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "docs.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    (tasks / "mythos_gen.yaml").write_text(TASK.format(jsonl=tasks / "docs.jsonl", max_gen=MAX_GEN))
    hf = load_hf(out, n_loops=2)
    tok = AutoTokenizer.from_pretrained(str(out), trust_remote_code=True)
    masks = []
    hf.register_forward_pre_hook(lambda m, a, kw: masks.append(kw.get("attention_mask")), with_kwargs=True)
    lm = HFLM(pretrained=hf, tokenizer=tok, batch_size=4, max_length=64, backend="causal")
    res = lm_eval.simple_evaluate(model=lm, tasks=["mythos_gen"], task_manager=TaskManager(
        include_path=str(tasks), include_defaults=False), log_samples=True)
    samples = res["samples"]["mythos_gen"]
    assert len(samples) == len(PROMPTS)
    padded = [m for m in masks if m is not None and m.shape[0] == 4 and not bool(m.all())]
    assert padded, "no left-padded batch of 4 reached the model"
    for s in samples:
        prompt = s["doc"]["prompt"]
        ids = tok(prompt, return_tensors="pt").input_ids
        new = ours.generate(ids, MAX_GEN, n_loops=2)[0, ids.shape[1]:].tolist()
        if tok.eos_token_id in new:  # transformers' generate ends a row at EOS
            new = new[:new.index(tok.eos_token_id) + 1]
        assert s["resps"][0][0] == tok.decode(new, skip_special_tokens=True), prompt
    assert len({s["resps"][0][0] for s in samples}) > 2, "degenerate responses: a weak comparison"
