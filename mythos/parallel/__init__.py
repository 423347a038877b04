"""Parallelism applied from outside the model: `build_mesh` then one `parallelize` step (torchtitan's order)."""
from mythos.parallel.env import DistEnv
from mythos.parallel.mesh import build_mesh
from mythos.parallel.meta_init import materialize, meta_device
from mythos.parallel.parallelize import clip_grad_norm, expert_grad_sync, grad_norm, parallelize
from mythos.parallel.ranks import all_reduce_mean, all_reduce_sum

__all__ = ["DistEnv", "all_reduce_mean", "all_reduce_sum", "build_mesh", "clip_grad_norm", "expert_grad_sync",
           "grad_norm", "materialize", "meta_device", "parallelize"]
