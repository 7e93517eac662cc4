"""The emulated-CUDA redirect behind maskrcnn_fast.emulated (see that module): loads _C_emu and
sends torch.ops.maskrcnn_fast calls on CPU tensors to their torch.ops.maskrcnn_fast_emu twins."""
import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from . import extension

__all__ = ["active", "available", "cuda", "error"]

_depth = 0  # cuda() blocks entered and not left


def error():
    """Why the emulated kernels cannot be loaded, or None when they can."""
    return extension.load_emu(extension.build_config())


def available() -> bool:
    return error() is None


def _on_cpu(args, kwargs) -> bool:
    """Only ops on CPU tensors are redirected (the emulated kernels take CPU tensors); CUDA
    tensors keep their real kernels."""
    tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    return all(t.device.type == "cpu" for t in tensors)


class _Redirect(TorchDispatchMode):
    """Sends every torch.ops.maskrcnn_fast call to its torch.ops.maskrcnn_fast_emu twin. It sits
    below autograd, so the ops' registered backward formulas run and their backward ops are
    redirected too."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "maskrcnn_fast" and _on_cpu(args, kwargs):
            name = func._schema.name.split("::", 1)[1]
            packet = getattr(torch.ops.maskrcnn_fast_emu, name)
            return getattr(packet, func._overloadname)(*args, **kwargs)
        return func(*args, **kwargs)


@contextlib.contextmanager
def cuda():
    """Within this block, maskrcnn_fast's ops on CPU tensors run the emulated CUDA kernels (ops
    on CUDA tensors run as usual)."""
    err = error()
    if err is not None:
        raise RuntimeError(f"maskrcnn_fast: the emulated CUDA kernels are not available ({err}); "
                           f"build them with `make build` (MASKRCNN_FAST_EMU=1)")
    global _depth
    _depth += 1
    try:
        with _Redirect():
            yield
    finally:
        _depth -= 1


def active() -> bool:
    """True inside a :func:`cuda` block."""
    return _depth > 0
