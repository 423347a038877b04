"""The HF-loaded model computes our model's function: logits equal (fp32, max abs diff <= 1e-5) at 1, 4 and 16 loops,
for looped and dense models, MLA and GQA, tied and untied heads, ACT; and it loads without the mythos package."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from tests.hf.conftest import load_hf, random_export

TOL = 1e-5


@pytest.mark.parametrize("kind", ["rdt-mla", "rdt-gqa", "rdt-mla-act", "dense-mla", "dense-gqa"])
def test_hf_logits_equal_ours(kind, prepared_data, tmp_path):
    ours, out = random_export(kind, prepared_data / "tokenizer.model", tmp_path / kind.replace("-", "_"))
    hf = load_hf(out)
    assert type(hf).__name__ == "MythosForCausalLM" and type(hf).__module__.startswith("transformers_modules")
    x_BT = torch.randint(0, 300, (2, 37), generator=torch.Generator().manual_seed(1))
    for n in ([1, 4, 16] if kind.startswith("rdt") else [None]):
        with torch.no_grad():
            got = hf(x_BT, n_loops=n).logits
            want = ours(x_BT, n_loops=n).logits_BTV
        assert got.dtype == torch.float32
        assert (got - want).abs().max().item() <= TOL, (kind, n)
    with torch.no_grad():  # labels: the usual shifted next-token loss
        loss = hf(x_BT, labels=x_BT, n_loops=4).loss
        want = torch.nn.functional.cross_entropy(ours(x_BT, n_loops=4).logits_BTV[:, :-1].flatten(0, 1),
                                                 x_BT[:, 1:].flatten())
    assert abs(loss.item() - want.item()) <= TOL
    if kind.startswith("rdt"):  # different loop counts give different functions (n_loops reaches the model)
        with torch.no_grad():
            assert (hf(x_BT, n_loops=1).logits - hf(x_BT, n_loops=16).logits).abs().max() > 1e-3


def test_n_loops_from_config_and_per_call(run_export, tiny_run):
    from mythos.checkpoint.load import load_run
    ours, cfg, _ = load_run(tiny_run)
    assert json.loads((run_export / "config.json").read_text())["n_loops"] == cfg.model.loops.inference
    x_BT = torch.randint(0, 300, (1, 50), generator=torch.Generator().manual_seed(2))
    hf16 = load_hf(run_export, n_loops=16)  # a config override, as lm-eval's model_args pass it
    assert hf16.config.n_loops == 16
    with torch.no_grad():
        want16 = ours(x_BT, n_loops=16).logits_BTV
        assert (hf16(x_BT).logits - want16).abs().max() <= TOL
        assert (hf16(x_BT, n_loops=4).logits - ours(x_BT, n_loops=4).logits_BTV).abs().max() <= TOL
        assert (load_hf(run_export)(x_BT).logits - ours(x_BT).logits_BTV).abs().max() <= TOL


def test_export_layout_sharded_and_standalone(run_export, monkeypatch):
    """Sharded weights with an index; the bundled code loads with the mythos package unimportable."""
    names = {p.name for p in run_export.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
            "model.safetensors.index.json", "modeling_mythos.py", "configuration_mythos.py"} <= names
    shards = sorted(n for n in names if n.startswith("model-") and n.endswith(".safetensors"))
    assert len(shards) > 1
    cfg = json.loads((run_export / "config.json").read_text())
    assert cfg["auto_map"]["AutoModelForCausalLM"] == "modeling_mythos.MythosForCausalLM"
    for name in names - {"mythos_errors.py"}:
        if name.endswith(".py"):
            assert "from mythos" not in (run_export / name).read_text() and "import mythos" not in \
                (run_export / name).read_text(), name
            assert '"mythos::' not in (run_export / name).read_text()  # own op namespace (see bundle.py)

    class NoMythos:
        def find_spec(self, fullname, path=None, target=None):
            if fullname == "mythos" or fullname.startswith("mythos."):
                raise ImportError(f"blocked: {fullname}")
            return None

    for mod in [m for m in sys.modules if m == "mythos" or m.startswith("mythos.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(sys, "meta_path", [NoMythos(), *sys.meta_path])
    hf = load_hf(run_export)
    assert not any(m == "mythos" or m.startswith("mythos.") for m in sys.modules)
    with torch.no_grad():
        assert torch.isfinite(hf(torch.tensor([[1, 2, 3]]), n_loops=3).logits).all()


def test_export_from_a_safetensors_export_file(tiny_run, tmp_path):
    """`--format hf` also takes the one-file `mythos-export` output (which records no seq_len: 2048)."""
    from mythos.checkpoint.load import export, load_run
    from mythos.hf.export import export_hf
    out = export_hf(export(tiny_run, tmp_path / "tiny.safetensors"), tmp_path / "from_file")
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == 2048
    ours, _, _ = load_run(tiny_run)
    x_BT = torch.randint(0, 300, (1, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (load_hf(out)(x_BT, n_loops=2).logits - ours(x_BT, n_loops=2).logits_BTV).abs().max() <= TOL
