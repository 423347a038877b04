"""The dry run behind `mythos-plan`: the real model, mesh and `parallelize` at any world size on one CPU.

torch's fake process group (`init_process_group("fake", ...)`: collectives return at once) stands in for the cluster
and FakeTensorMode for the tensors (shapes, dtypes and devices, no storage), as torchtitan's memory estimator does.
One training step through the trainer's engine (`forward_backward` per micro-batch, `optim_step`) is then run for
rank `rank`:

* state bytes: `accounting.state_bytes` on the sharded model and optimizer (the same function a real run uses);
* collectives: `accounting.CollectiveCounter` (torch's CommDebugMode) per kind and mesh dim, the same counter a real
  run uses; the expert all-to-alls assume balanced routing (a real run's per-rank bytes vary with the routing, their
  mean over ranks does not);
* step memory: torch's `MemTracker` peak over forward + backward (activations, temporaries, gradients, gathered
  parameters), minus the sharded parameters held before it, with the configured checkpointing and without it.
"""
from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.distributed as dist
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker

from mythos.model import Mythos
from mythos.parallel import ranks
from mythos.parallel.accounting import CollectiveCounter, dim_spans, mesh_dim_groups, split_by_span, state_bytes
from mythos.parallel.env import DistEnv
from mythos.parallel.mesh import build_mesh, mesh_dims
from mythos.train.batch import split_batch
from mythos.train.engine import FSDPEngine, MicroBatch

# torch.distributed registers its "fake" backend only when this testing module is imported (torch 2.13 has no public
# equivalent); the store is the public HashStore, which torch documents as usable in place of its FakeStore.
try:
    import torch.testing._internal.distributed.fake_pg  # noqa: F401
except ImportError as e:  # pragma: no cover - a torch without it
    raise ImportError(f"torch {torch.__version__}: torch.testing._internal.distributed.fake_pg not found (mythos-plan "
                      f"is tested with torch 2.13): install that version") from e


@dataclasses.dataclass
class Shape:
    world: int
    micro_batch: int
    n_micro: int
    seq_len: int
    loops: int | None


def step_shape(cfg, world: int, micro_batch: int | None = None) -> Shape:
    """The step the trainer would run: its batch split (mythos/train/batch.py, the rule the engines use)."""
    t = cfg.train
    split = split_batch(t.global_batch, world, micro_batch or t.micro_batch)
    loops = cfg.model.loops.train_count if cfg.model.mode != "dense" else None
    return Shape(world, split.micro_batch, split.n_micro, t.seq_len, loops)


@contextlib.contextmanager
def fake_process_group(world: int, rank: int):
    """torch's fake process group (nothing is sent)."""
    if world == 1:
        yield
        return
    dist.init_process_group("fake", store=dist.HashStore(), rank=rank, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _engine(cfg, mesh, ac: str, fake_mode) -> FSDPEngine:
    """The trainer's engine over a fake model; parallelize runs outside the mode (its meshes hold real rank
    tensors)."""
    with fake_mode:
        model = Mythos(cfg.model)
    cfg = dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel, ac=ac, compile=False))
    env = DistEnv(ranks.rank(), ranks.world(), 0, torch.device("cpu"))
    return FSDPEngine(model, cfg, env, None, mesh=mesh, fake=True)


def _step(engine: FSDPEngine, shape: Shape, vocab: int, counter=None, tracker=None) -> None:
    """The step's micro-batches through the engine. Micro-batches between the first and the last do the same work,
    so only one of them runs and its collectives are counted n_micro - 2 times."""
    n = shape.n_micro
    for m, repeats in ((0, 1), (1, n - 2), (n - 1, 1)) if n > 3 else ((m, 1) for m in range(n)):
        tokens = torch.randint(0, vocab, (shape.micro_batch, shape.seq_len + 1))
        before = counter.snapshot() if counter is not None else None
        with counter or contextlib.nullcontext(), tracker or contextlib.nullcontext():
            engine.forward_backward(MicroBatch(tokens[:, :-1], tokens[:, 1:], shape.loops, last=m == n - 1))
        if counter is not None and repeats != 1:
            counter.repeat_since(before, repeats)


def _step_peak(cfg, mesh, shape: Shape, ac: str, fake_mode) -> int:
    """Peak bytes over forward + backward above the sharded parameters (MemTracker, one micro-batch)."""
    engine = _engine(cfg, mesh, ac, fake_mode)
    tracker = MemTracker()
    tracker.track_external(engine.model)
    one = dataclasses.replace(shape, n_micro=1)
    with fake_mode:
        _step(engine, one, cfg.model.vocab_size, tracker=tracker)
    peak = sum(v for dev in tracker.get_tracker_snapshot("peak").values() for k, v in dev.items()
               if str(k).endswith("Total"))
    params = sum(v for k, v in state_bytes(engine.model).items() if k.startswith("params"))
    return int(peak - params)


def dry_run(cfg, world: int, rank: int = 0, micro_batch: int | None = None, memory: bool = True,
            group_size: int | None = None) -> dict:
    """Per-rank bytes and collectives of one training step of `cfg` at `world` ranks (see the module docstring).
    Collective bytes are also split into those sent inside a block of `group_size` consecutive ranks (a node; default
    the shard group, world / parallel.dp_replicate) and those sent across blocks."""
    shape = step_shape(cfg, world, micro_batch)
    with fake_process_group(world, rank):
        mesh = build_mesh(DistEnv(rank, world, 0, torch.device("cpu")), cfg.parallel)
        counter = CollectiveCounter(mesh_dim_groups(mesh) if mesh is not None else None)
        group_size = group_size or world // cfg.parallel.dp_replicate
        spans = dim_spans(mesh, group_size)
        fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        engine = _engine(cfg, mesh, cfg.parallel.ac, fake_mode)
        with fake_mode:
            _step(engine, shape, cfg.model.vocab_size, counter=counter)
            engine.optim_step()
        state = state_bytes(engine.model, engine.optimizer)
        del engine
        peaks = {}
        if memory:
            for ac in dict.fromkeys((cfg.parallel.ac, "none")):
                peaks[ac] = _step_peak(cfg, mesh, shape, ac, fake_mode)
    return {"world": world, "rank": rank, "mesh": _mesh_desc(cfg, world), **dataclasses.asdict(shape),
            "state_bytes": state, "collectives": counter.table(), "group_size": group_size, "dim_spans": spans,
            "collective_bytes": split_by_span(counter.table(), spans), "step_peak_bytes": peaks}


def _mesh_desc(cfg, world: int) -> dict:
    return mesh_dims(world, cfg.parallel)
