"""The one batch split rule: any world size that divides the global batch works; otherwise one line naming the
nearest values that would, printed by rank 0 alone."""
from __future__ import annotations

import json

import pytest

from mythos import errors
from mythos.config import load_config
from mythos.errors import SameOnEveryRank, cli_entry
from mythos.train.batch import BatchSplitError, split_batch
from tests.conftest import REPO


@pytest.mark.parametrize("g,w,mb,want", [
    (16, 1, 16, (16, 1)), (16, 2, 16, (8, 1)), (16, 4, 2, (2, 2)), (12, 1, 5, (4, 3)), (64, 8, 16, (8, 1)),
    (64, 4, 16, (16, 1)), (18, 3, 4, (3, 2)),
])
def test_split_micro_batch_and_accumulation(g, w, mb, want):
    s = split_batch(g, w, mb)
    assert (s.micro_batch, s.n_micro) == want
    assert s.micro_batch * s.n_micro * w == g and s.micro_batch <= mb


@pytest.mark.parametrize("g", [16, 24, 64, 96])
def test_every_world_size_dividing_the_batch_works(g):
    for w in range(1, g + 1):
        if g % w == 0:
            for mb in (1, 3, 8, 16, 64):
                s = split_batch(g, w, mb)
                assert s.per_rank % s.micro_batch == 0 and s.micro_batch * s.n_micro * w == g
        else:
            with pytest.raises(BatchSplitError):
                split_batch(g, w, 8)


def test_misfit_names_the_nearest_values():
    with pytest.raises(BatchSplitError) as e:
        split_batch(16, 3, 16, "1 nodes x 3 tasks")
    msg = str(e.value)
    assert "train.global_batch" in msg and "3 ranks (1 nodes x 3 tasks)" in msg
    assert "run on 2 or 4 ranks" in msg and "--train.global_batch 15 or 18" in msg
    assert isinstance(e.value, SameOnEveryRank) and "\n" not in msg
    for fixed in (split_batch(16, 2, 16), split_batch(16, 4, 16), split_batch(15, 3, 16), split_batch(18, 3, 16)):
        assert fixed.n_micro >= 1  # the values it names are accepted


def test_shipped_configs_split_at_the_readme_rank_counts():
    for name, world, extra in (("tiny-cpu", 1, {}), ("tiny-cpu", 2, {}), ("small", 8, {"parallel.ep": 2}),
                               ("rdt-770m", 32, {}), ("dense-1.3b", 64, {})):
        cfg = load_config(REPO / "configs" / f"{name}.toml", extra)
        s = split_batch(cfg.train.global_batch, world, cfg.train.micro_batch)
        assert s.micro_batch * s.n_micro * world == cfg.train.global_batch, name


def _raise(exc):
    @cli_entry
    def main():
        raise exc
    return main


def test_rank_invariant_error_is_printed_by_rank_0_only(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(errors, "SILENT_RANK_WAIT_S", 0.0)
    err_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(err_file))
    for rank, printed in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        with pytest.raises(SystemExit) as e:
            _raise(SameOnEveryRank("config key 'x': bad"))()
        assert e.value.code == 2
        assert capsys.readouterr().err == ("error: config key 'x': bad\n" if printed else "")
        assert err_file.exists() == printed
    assert "error: config key 'x': bad" in json.loads(err_file.read_text())["message"]["message"]
    monkeypatch.setenv("RANK", "1")  # an ordinary UserError can differ per rank: every rank prints it
    with pytest.raises(SystemExit):
        _raise(errors.UserError("data/x: missing on this node"))()
    assert capsys.readouterr().err == "error: data/x: missing on this node\n"
