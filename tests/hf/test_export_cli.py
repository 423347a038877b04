"""Bad input to mythos-export / mythos-eval --harness: one-line error, exit 2, nothing written."""
from __future__ import annotations

import shutil

import pytest

from mythos.hf.export_cli import main as export_main


def _fails(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_unknown_format(tiny_run, tmp_path, capsys):
    err = _fails(export_main, [str(tiny_run), "--out", str(tmp_path / "x"), "--format", "onnx"], capsys)
    assert "--format 'onnx'" in err and "hf" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["hf", "safetensors"])
def test_run_without_checkpoint(tiny_run, tmp_path, capsys, fmt):
    bare = tmp_path / "bare_run"
    bare.mkdir()
    shutil.copy(tiny_run / "config.toml", bare / "config.toml")
    err = _fails(export_main, [str(bare), "--out", str(tmp_path / "out"), "--format", fmt], capsys)
    assert "no checkpoint" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare_run"]


def test_not_a_run(tmp_path, capsys):
    err = _fails(export_main, [str(tmp_path / "nope"), "--out", str(tmp_path / "out"), "--format", "hf"], capsys)
    assert "nope" in err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    err = _fails(export_main, [str(tiny_run), "--out", str(out), "--format", "hf"], capsys)
    assert "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and len(list(tmp_path.iterdir())) == 1


def test_harness_bad_tasks(tiny_run, tmp_path, capsys):
    from mythos.evals.cli import main
    _fails(main, [str(tiny_run), "--harness", ",", "--harness-out", str(tmp_path / "h")], capsys)
    assert list(tmp_path.iterdir()) == []

