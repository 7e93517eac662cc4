"""maskrcnn_fast: Mask R-CNN for PyTorch with fused C++/CUDA kernels.

The ops live in :mod:`maskrcnn_fast.ops` (torch.ops.maskrcnn_fast underneath).
"""
import torch

__all__ = ["build_info", "ops", "__version__"]

from . import _C  # noqa: F401  registers torch.ops.maskrcnn_fast
from . import ops  # noqa: E402
from . import models  # noqa: E402,F401  Mask R-CNN builders

try:
    from . import _build_config as _cfg
except ImportError:  # a source tree that was never built
    _cfg = None

__version__ = _cfg.version if _cfg is not None else "0.0.0+unknown"


def build_info():
    """What the compiled extension was built with.

    Returns a dict: ``version``, ``torch`` (the torch it was built against), ``torch_runtime``
    (the torch imported now), ``cuda`` (CUDA version built against, or None), ``cuda_arch_list``
    (architectures of the CUDA kernels), ``cuda_kernels`` (True when CUDA kernels are in).
    """
    return {
        "version": __version__,
        "torch": _cfg.torch_version if _cfg else None,
        "torch_runtime": torch.__version__,
        "cuda": _cfg.cuda_version if _cfg else None,
        "cuda_arch_list": list(_cfg.cuda_arch_list) if _cfg else [],
        "cuda_kernels": bool(_cfg.with_cuda) if _cfg else False,
    }

from .cuda_graph import capture as capture_cuda_graph  # noqa: E402
from .inference import optimize_for_inference  # noqa: E402

__all__ += ["models", "optimize_for_inference", "capture_cuda_graph"]
