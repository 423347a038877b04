"""Parallelism applied from outside the model: one `parallelize` step (torchtitan's order)."""
from mythos.parallel.env import DistEnv, all_reduce_mean, all_reduce_sum
from mythos.parallel.parallelize import parallelize

__all__ = ["DistEnv", "all_reduce_mean", "all_reduce_sum", "parallelize"]
