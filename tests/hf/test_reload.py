"""Loading exports again in one process is safe (issue 18): one export 5 times and two different exports, each copy
running a forward and a greedy generate() after every later load. Before the fix a second load re-registered the
bundle's custom op under the same name, which destroyed the first registration and left the first copy calling a freed
dispatcher entry: an intermittent segfault or std::bad_alloc. The destroy itself is what this test catches
deterministically (a counter on torch.library.Library._destroy); the numerics catch a copy computing garbage.
Repeat it: pytest tests/hf/test_reload.py --count 20 (pytest-repeat)."""
from __future__ import annotations

import torch

from tests.hf.conftest import load_hf, random_export

TOL = 1e-5


def test_one_export_five_times_and_two_exports_in_one_process(prepared_data, tmp_path, monkeypatch):
    destroyed: list[str] = []
    original = torch.library.Library._destroy

    def counting_destroy(lib):
        destroyed.append(lib.ns)
        return original(lib)

    monkeypatch.setattr(torch.library.Library, "_destroy", counting_destroy)
    tok = prepared_data / "tokenizer.model"
    ours_a, dir_a = random_export("rdt-mla", tok, tmp_path / "a", seed=0)
    ours_b, dir_b = random_export("rdt-gqa", tok, tmp_path / "b", seed=1)
    x_BT = torch.randint(0, 300, (2, 13), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = {"a": ours_a(x_BT, n_loops=4).logits_BTV, "b": ours_b(x_BT, n_loops=4).logits_BTV}
        want_gen = {"a": ours_a.generate(x_BT[:1, :5], 6, n_loops=4), "b": ours_b.generate(x_BT[:1, :5], 6, n_loops=4)}
    loaded: list[tuple[str, torch.nn.Module]] = []
    for which, path in [("a", dir_a)] * 5 + [("b", dir_b), ("a", dir_a)]:
        loaded.append((which, load_hf(path)))
        for name, hf in loaded:  # every copy loaded so far still works after this load
            with torch.no_grad():
                assert (hf(x_BT, n_loops=4).logits - want[name]).abs().max().item() <= TOL, name
                gen = hf.generate(x_BT[:1, :5], max_new_tokens=6, do_sample=False, n_loops=4)
            assert torch.equal(gen, want_gen[name]), name
    assert not [ns for ns in destroyed if ns.startswith("mythos")], destroyed
