import re
import tomllib

import pytest

from mythos.config import build_config, load_config, parse_overrides, save_config
from mythos.errors import UserError
from mythos.model import ModelConfig
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
    ({"train.dtype": "fp16"}, "config key 'train.dtype': expected one of fp32|bf16, got 'fp16'"),
    ({"parallel.zero_stage": "4"}, "config key 'parallel.zero_stage': expected one of 1|2|3, got '4'"),
    ({"model.attention.kind": "mha"}, "config key 'model.attention.kind': expected one of mla|gqa, got 'mha'"),
    ({"parallel.compile": "yes"}, "config key 'parallel.compile': expected bool (true|false), got 'yes'"),
    ({"parallel.mixed_precision": "bf16"}, "config key 'parallel.mixed_precision' was removed: use 'train.dtype'"),
    ({"model_name": "small"}, "unknown config key 'model_name'"),
    ({"train": "5"}, "config key 'train': expected a table of keys"),
])
def test_bad_values_name_the_key(overrides, needle):
    with pytest.raises(UserError, match=re.escape(needle)):
        build_config({}, overrides)


def test_toml_type_checked():
    with pytest.raises(UserError, match="'train.lr': expected float"):
        build_config({"train": {"lr": "fast"}})
    with pytest.raises(UserError, match="'checkpoint.final': expected bool"):
        build_config({"checkpoint": {"final": 1}})


def test_values_are_typed_and_cli_wins_over_file():
    cfg = build_config({"train": {"steps": 5, "dtype": "bf16"}, "parallel": {"zero_stage": 3}},
                       {"train.steps": "7", "data.path": "-odd-dir", "parallel.compile": "True", "run.dir": ""})
    assert (cfg.train.steps, cfg.train.dtype, cfg.parallel.zero_stage, cfg.parallel.compile) == (7, "bf16", 3, True)
    assert (cfg.data.path, cfg.run.dir) == ("-odd-dir", "")  # a value may start with '-' or be empty
    assert build_config({"train": {"lr": 1}}).train.lr == 1.0 and isinstance(build_config({}).train.lr, float)


def test_model_name_picks_the_defaults_the_model_keys_override():
    cfg = build_config({"model": {"name": "small", "dim": 64}}, {"model.moe.top_k": "1"})
    small = ModelConfig.named("small")
    assert cfg.model_name == "small" and cfg.model.dim == 64 and cfg.model.moe.top_k == 1
    assert cfg.model.moe.n_routed == small.moe.n_routed and cfg.model.vocab_size == small.vocab_size


def test_saved_config_round_trips(tmp_path):
    cfg = build_config({}, {"model.name": "small", "model.moe.top_k": "1", "train.lr": "0.002", "run.dir": 'x "y"',
                            "train.dtype": "bf16", "checkpoint.final": "false", "parallel.zero_stage": "3"})
    save_config(cfg, tmp_path / "c.toml")
    again = load_config(tmp_path / "c.toml")
    assert again == cfg
    saved = tomllib.loads((tmp_path / "c.toml").read_text())
    assert saved["model"]["name"] == "small" and saved["model"]["moe"]["top_k"] == 1
    assert saved["train"]["dtype"] == "bf16" and saved["checkpoint"]["final"] is False


def test_shipped_configs_load():
    from tests.conftest import REPO
    for path in sorted((REPO / "configs").glob("*.toml")):
        assert load_config(path).model_name in ModelConfig.names(), path


@pytest.mark.parametrize("args, needle", [
    (["--train.stepz", "3"], "unknown config key 'train.stepz'"),
    (["--train.steps", "x"], "config key 'train.steps': expected int, got 'x'"),
    (["--data.path", "/nonexistent/data"], "/nonexistent/data"),
    (["--train.dtype", "fp16"], "config key 'train.dtype': expected one of fp32|bf16, got 'fp16'"),
    (["--parallel.mixed_precision", "bf16"], "use 'train.dtype'"),
    (["--train.steps"], "config key 'train.steps': missing value"),
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
    r = run_cli(["mythos.train.cli"], timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: --config FILE is required") and \
        len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_old_config_with_removed_key_names_the_new_one(tmp_path):
    cfg = tmp_path / "old.toml"
    cfg.write_text('[train]\ndtype = "fp32"\n[parallel]\nmixed_precision = "bf16"\n')
    with pytest.raises(UserError) as e:
        load_config(cfg)
    assert str(e.value).startswith(f"{cfg}: config key 'parallel.mixed_precision' was removed: use 'train.dtype'")


@pytest.mark.parametrize("dtype,mp", [("bf16", "bf16"), ("bf16", "fp32"), ("fp32", "fp32")])
def test_run_saved_before_one_bf16_key_still_loads(tmp_path, dtype, mp):
    """Every RUN/config.toml written before train.dtype was the one bf16 key holds parallel.mixed_precision."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[train]\ndtype = "{dtype}"\n[parallel]\nmixed_precision = "{mp}"\n')
    assert load_config(cfg).train.dtype == dtype


def test_help_shows_every_key_with_its_doc():
    r = run_cli(["mythos.train.cli", "--help"], env_extra={"COLUMNS": "100"}, timeout=120)  # one column
    assert r.returncode == 0, r.stderr
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", r.stdout).split())
    for needle in ["--train.steps INT optimizer steps to train for", "--train.dtype {fp32,bf16} the one bf16 switch",
                   "--parallel.ac {none,loop,block,selective} activation checkpointing",
                   "--checkpoint.final true|false checkpoint after the last step", "--model.name STR a named model",
                   "--model.moe.top_k INT routed experts per token",
                   '--data.path STR a prepared directory, or "dirA@0.7,dirB@0.3" to blend', "--config"]:
        assert needle in text, needle
    from mythos.config import Config, _leaf_types
    for key in [*_leaf_types(Config), "model.name"]:  # every key is listed with a doc before its default
        m = re.search(rf"--{re.escape(key)} (\S+) (.*?)\(default: ", text)
        assert m and m.group(2).strip(), f"--{key}: no doc in --help"


def test_help_with_a_config_shows_its_values(capsys, monkeypatch):
    from mythos.config import config_help
    from tests.conftest import REPO
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as e:
        config_help("mythos-train", "help", str(REPO / "configs" / "small.toml"))
    assert e.value.code in (0, None) and "(default: runs/small)" in capsys.readouterr().out
