import dataclasses

import pytest

from mythos.errors import UserError
from mythos.model import ModelConfig, Mythos

NAMES = ["dense-1.3b", "rdt-3b", "rdt-770m", "small", "tiny"]


def test_named_configs_exist_and_are_fresh():
    assert ModelConfig.names() == NAMES
    a, b = ModelConfig.named("tiny"), ModelConfig.named("tiny")
    a.moe.n_routed = 99
    assert b.moe.n_routed == 8, "named() must return an independent instance"


def test_unknown_name_lists_known():
    with pytest.raises(UserError, match="unknown model name 'nope'.*tiny"):
        ModelConfig.named("nope")


def test_fields_are_plain_types():
    """The trainer's generic TOML overrides can only set int/float/str/bool fields and nested dataclasses."""
    def walk(obj, prefix=""):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if dataclasses.is_dataclass(v):
                walk(v, prefix + f.name + ".")
            else:
                assert type(v) in (int, float, str, bool), f"{prefix}{f.name}: {type(v)}"
    walk(ModelConfig.named("rdt-770m"))


@pytest.mark.parametrize("path, value, key", [
    ("mode", "looped", "model.mode"),
    ("attention.kind", "mha", "model.attention.kind"),
    ("moe.top_k", 99, "model.moe.top_k"),
    ("loops.distribution", "uniform", "model.loops.distribution"),
    ("loops.max", 0, "model.loops.max"),
    ("injection.kind", "lti", "model.injection.kind"),
    ("injection.a_init", 1.5, "model.injection.a_init"),
    ("dropout", 1.0, "model.dropout"),
    ("dim", 0, "model.dim"),
])
def test_bad_values_name_the_key(path, value, key):
    cfg = ModelConfig.named("tiny")
    obj = cfg
    *parents, leaf = path.split(".")
    for p in parents:
        obj = getattr(obj, p)
    setattr(obj, leaf, value)
    with pytest.raises(UserError, match=f"'{key}'"):
        cfg.validate()
    with pytest.raises(UserError, match=f"'{key}'"):
        Mythos(cfg)
