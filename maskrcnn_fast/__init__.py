"""maskrcnn_fast: Mask R-CNN for PyTorch with fused C++/CUDA kernels.

The ops live in :mod:`maskrcnn_fast.ops` (torch.ops.maskrcnn_fast underneath).
"""
import torch

__all__ = ["build_info", "ops", "__version__"]

from ._ext import load_ops

# Loads _C (torch.ops.maskrcnn_fast), else the pure-PyTorch fallback with a warning; beside
# another torch release this raises ImportError.
_cfg, _extension_error = load_ops()

from . import ops  # noqa: E402
from . import models  # noqa: E402,F401  Mask R-CNN builders

__version__ = _cfg.version if _cfg is not None else "0.0.0+unknown"


def build_info():
    """What the compiled extension was built with.

    Returns a dict: ``version``, ``torch`` (the torch it was built against), ``torch_runtime``
    (the torch imported now), ``cuda`` (CUDA version built against, or None), ``cuda_arch_list``
    (architectures of the CUDA kernels), ``cuda_kernels`` (True when CUDA kernels are loaded),
    ``extension`` (True when the compiled extension is loaded; False: every op runs on the
    pure-PyTorch reference), ``extension_error`` (why it is not loaded, else None) and
    ``emulated_cuda`` (True when the emulated-CUDA test extension _C_emu loads: see
    :mod:`maskrcnn_fast.emulated`).
    """
    from . import emulated

    loaded = _extension_error is None
    return {
        "version": __version__,
        "torch": _cfg.torch_version if _cfg else None,
        "torch_runtime": str(torch.__version__),
        "cuda": _cfg.cuda_version if _cfg else None,
        "cuda_arch_list": list(_cfg.cuda_arch_list) if _cfg else [],
        "cuda_kernels": bool(loaded and _cfg and _cfg.with_cuda),
        "extension": loaded,
        "extension_error": _extension_error,
        "emulated_cuda": emulated.available(),
    }

from . import emulated  # noqa: E402
from .inference import capture_cuda_graph, optimize_for_inference  # noqa: E402
from . import deploy  # noqa: E402  torch.export, AOTInductor packages, ONNX
from .deploy import export  # noqa: E402
from . import accelerate  # noqa: E402  our kernels behind torchvision's own ops
from .accelerate import accelerate_torchvision  # noqa: E402

__all__ += ["models", "optimize_for_inference", "capture_cuda_graph", "emulated", "deploy", "export",
            "accelerate", "accelerate_torchvision"]
