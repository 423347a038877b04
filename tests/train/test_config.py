import pytest

from mythos.config import build_config, dumps_toml, load_config, parse_overrides, save_config
from mythos.errors import UserError
from tests.conftest import run_cli


def test_overrides_typed_and_nested():
    cfg = build_config({"train": {"steps": 5}}, parse_overrides(
        ["--train.lr", "0.01", "--model.moe.n_routed=16", "--parallel.compile", "true", "--model.name", "small"]))
    assert cfg.train.steps == 5 and cfg.train.lr == 0.01
    assert cfg.model.moe.n_routed == 16 and cfg.parallel.compile is True and cfg.model_name == "small"


@pytest.mark.parametrize("overrides, needle", [
    ({"train.stepz": "3"}, "unknown config key 'train.stepz'"),
    ({"model.moe.n_routd": "3"}, "unknown config key 'model.moe.n_routd'"),
    ({"train.steps": "ten"}, "config key 'train.steps': expected int"),
    ({"train.schedule": "linear"}, "config key 'train.schedule'"),
    ({"model.name": "nope"}, "unknown model name 'nope'"),
    ({"train.steps": "0"}, "config key 'train.steps'"),
])
def test_bad_values_name_the_key(overrides, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(")):
        build_config({}, overrides)


def test_toml_type_checked():
    with pytest.raises(UserError, match="'train.lr': expected float"):
        build_config({"train": {"lr": "fast"}})
    with pytest.raises(UserError, match="'checkpoint.final': expected bool"):
        build_config({"checkpoint": {"final": 1}})


def test_saved_config_round_trips(tmp_path):
    cfg = build_config({}, {"model.name": "tiny", "model.moe.top_k": "1", "train.lr": "0.002", "run.dir": "x y"})
    save_config(cfg, tmp_path / "c.toml")
    again = load_config(tmp_path / "c.toml")
    assert again == cfg
    assert "[model.moe]" in dumps_toml({"model": {"moe": {"top_k": 1}}})


@pytest.mark.parametrize("args, needle", [
    (["--train.stepz", "3"], "unknown config key 'train.stepz'"),
    (["--train.steps", "x"], "config key 'train.steps': expected int, got 'x'"),
    (["--data.path", "/nonexistent/data"], "/nonexistent/data"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, args, needle):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\ndir = "%s"\n[data]\npath = "/nonexistent/data"\n' % (tmp_path / "run"))
    r = run_cli(["mythos.train.cli", "--config", str(cfg), *args], timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_cli_missing_config_file(tmp_path):
    r = run_cli(["mythos.train.cli", "--config", str(tmp_path / "missing.toml")], timeout=120)
    assert r.returncode == 2 and "missing.toml: config file not found" in r.stderr
