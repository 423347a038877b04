"""Mesh shapes with HSDP (parallel.dp_replicate): validation in one line naming the key, and the layout description
the trainer, mythos-submit and mythos-plan print."""
from __future__ import annotations

import pytest

from mythos.config import ParallelConfig, build_config
from mythos.errors import UserError
from mythos.parallel.mesh import describe_mesh, mesh_dims, mesh_shape


def test_hsdp_mesh_shapes():
    assert mesh_dims(32, ParallelConfig(dp_replicate=4)) == {"dp_replicate": 4, "dp_shard": 8, "ep": 1}
    assert mesh_dims(64, ParallelConfig(dp_replicate=8, ep=8)) == {"dp_replicate": 8, "dp_shard": 1, "ep": 8}
    assert mesh_shape(8, -1, 2) == (4, 2)  # no HSDP: as before
    assert describe_mesh(4, ParallelConfig(dp_replicate=2, ep=2)) == "world 4 = dp_replicate 2 x dp_shard 1 x ep 2"
    assert describe_mesh(4, ParallelConfig()) == "world 4 = dp_shard 4 x ep 1"


@pytest.mark.parametrize("kwargs, key", [({"dp_replicate": 3}, "parallel.dp_replicate"),
                                         ({"dp_replicate": 2, "ep": 4}, "parallel.ep"),
                                         ({"dp_replicate": 2, "dp_shard": 4}, "parallel.dp_shard")])
def test_bad_hsdp_shape_names_the_key(kwargs, key):
    with pytest.raises(UserError) as e:
        mesh_dims(4, ParallelConfig(**kwargs))
    assert str(e.value).startswith(f"config key '{key}'") and "\n" not in str(e.value)


def test_config_checks_dp_replicate():
    with pytest.raises(UserError, match=r"^config key 'parallel.dp_replicate': expected >= 1, got 0$"):
        build_config({}, {"parallel.dp_replicate": "0"})
    with pytest.raises(UserError, match=r"^config key 'parallel.dp_replicate': 2 \(HSDP\) is an FSDP2 layout"):
        build_config({}, {"parallel.dp_replicate": "2", "parallel.backend": "deepspeed"})
