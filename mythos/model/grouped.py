"""Grouped expert matmul as one opaque custom op (`mythos::expert_mm`), so torch.compile neither breaks the graph
nor recompiles on the per-expert row counts, and eager runs the fastest kernel the device has.

expert_mm(x [M, K], w [E, K, N], offs [E] int32 cumulative row counts) -> [M, N], rows offs[e-1]:offs[e] @ w[e].
Kernel: `torch._grouped_mm` where it runs (CPU: fp32/bf16/fp16; CUDA: bf16 on sm90+; 16-byte aligned dims), else a loop over the experts'
contiguous row slices (float64, older GPUs). Backward is the same op on transposed weights plus a grouped weight
gradient, so gradients take the same fast path.

Defined once per process: `torch.library.custom_op` under a name that is already registered destroys the earlier
registration, and the earlier module's op object then calls a freed dispatcher entry (a segfault or std::bad_alloc,
intermittent). That happens whenever these sources are imported twice: an HF export loaded from two directories, or
twice, in one process (its bundled copy uses a namespace named after a hash of the sources, so equal names mean equal
code). A second import therefore reuses the live op; its own `force_slice_loop` then does not reach the kernel.
"""
from __future__ import annotations

import contextlib

import torch

_HAS_GROUPED_MM = hasattr(torch, "_grouped_mm")
_FORCE_LOOP = False


@contextlib.contextmanager
def force_slice_loop(enabled: bool = True):
    """Use the per-expert slice loop even where _grouped_mm runs (tests and benchmarks compare the two)."""
    global _FORCE_LOOP
    old, _FORCE_LOOP = _FORCE_LOOP, enabled
    try:
        yield
    finally:
        _FORCE_LOOP = old


def grouped_mm_supported(x: torch.Tensor, w: torch.Tensor) -> bool:
    if _FORCE_LOOP or not _HAS_GROUPED_MM or x.dtype != w.dtype or x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    if any(d * x.element_size() % 16 for d in (x.shape[-1], w.shape[-1], w.shape[-2])):
        return False  # _grouped_mm needs 16-byte aligned strides
    if x.device.type == "cuda":
        return x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device) >= (9, 0)
    return x.device.type == "cpu"


def _bounds(offs: torch.Tensor) -> list[tuple[int, int, int]]:
    ends = offs.tolist()
    return [(e, s, t) for e, (s, t) in enumerate(zip([0] + ends[:-1], ends)) if t > s]


def _registered(qualname: str):
    """The live op already registered under qualname ("ns::name"), or None."""
    namespace, name = qualname.split("::")
    return getattr(getattr(torch.ops, namespace), name, None)


def _expert_mm(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    if x.shape[0] == 0:
        return x.new_zeros(0, w.shape[-1])
    if grouped_mm_supported(x, w):
        return torch._grouped_mm(x.contiguous(), w, offs=offs)
    out = x.new_zeros(x.shape[0], w.shape[-1])
    for e, s, t in _bounds(offs):
        torch.mm(x[s:t], w[e], out=out[s:t])
    return out


def _expert_mm_fake(x, w, offs):
    return x.new_empty(x.shape[0], w.shape[-1])


def _expert_mm_wgrad(x: torch.Tensor, g: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """[E, K, N]: x[rows of e]^T @ g[rows of e] per expert (zeros for experts without rows)."""
    n_exp = offs.shape[0]
    if x.shape[0] > 0 and grouped_mm_supported(x, g):
        return torch._grouped_mm(x.t(), g.contiguous(), offs=offs)
    out = x.new_zeros(n_exp, x.shape[1], g.shape[1])
    for e, s, t in _bounds(offs):
        torch.mm(x[s:t].t(), g[s:t], out=out[e])
    return out


def _expert_mm_wgrad_fake(x, g, offs):
    return x.new_empty(offs.shape[0], x.shape[1], g.shape[1])


def _setup_context(ctx, inputs, output):
    x, w, offs = inputs
    ctx.save_for_backward(x, w, offs)


def _backward(ctx, grad):
    x, w, offs = ctx.saved_tensors
    grad = grad.contiguous()  # e.g. the stride-0 gradient of `.sum()`
    dx = expert_mm(grad, w.transpose(-1, -2), offs) if ctx.needs_input_grad[0] else None
    dw = expert_mm_wgrad(x, grad, offs) if ctx.needs_input_grad[1] else None
    return dx, dw, None


def _define(qualname: str, kernel, fake):
    op = torch.library.custom_op(qualname, kernel, mutates_args=())
    op.register_fake(fake)
    return op


expert_mm = _registered("mythos::expert_mm")
expert_mm_wgrad = _registered("mythos::expert_mm_wgrad")
if expert_mm is None or expert_mm_wgrad is None:  # the first import of these sources in this process
    expert_mm = _define("mythos::expert_mm", _expert_mm, _expert_mm_fake)
    expert_mm_wgrad = _define("mythos::expert_mm_wgrad", _expert_mm_wgrad, _expert_mm_wgrad_fake)
    expert_mm.register_autograd(_backward, setup_context=_setup_context)
