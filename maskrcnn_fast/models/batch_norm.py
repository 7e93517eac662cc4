"""A batch norm with fixed statistics as the per-channel affine map it is: the one formula behind
the backbone's in-place and folded paths and optimize_for_inference's folding into convolutions."""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["is_frozen_bn", "bn_affine"]


def is_frozen_bn(m: nn.Module) -> bool:
    """torchvision's FrozenBatchNorm2d, or a look-alike of another library: a module named so that
    holds the four buffers."""
    if isinstance(m, FrozenBatchNorm2d):
        return True
    return type(m).__name__ == "FrozenBatchNorm2d" and all(
        hasattr(m, b) for b in ("weight", "bias", "running_mean", "running_var")
    )


def bn_affine(bn: nn.Module, dtype: Optional[torch.dtype] = None) -> Optional[Tuple[Tensor, Tensor]]:
    """-> (scale [C], shift [C]) with ``bn(x) == x * scale + shift``, or None when ``bn`` normalises
    with batch statistics (a BatchNorm2d in training mode, or one without running statistics).

    The arithmetic is torchvision's FrozenBatchNorm2d's (``scale = w * rsqrt(var + eps)``,
    ``shift = b - mean * scale``), so ``x * scale + shift`` gives its bits. ``dtype``: compute in
    that dtype (float64 when folding into weights, so that only the final cast rounds)."""
    if is_frozen_bn(bn):
        eps = float(getattr(bn, "eps", 1e-5))
        w, b = bn.weight, bn.bias
    elif isinstance(bn, nn.BatchNorm2d):
        if bn.training or bn.running_mean is None or bn.running_var is None:
            return None
        eps = float(bn.eps)
        w = bn.weight if bn.affine else torch.ones_like(bn.running_mean)
        b = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    else:
        return None
    mean, var = bn.running_mean, bn.running_var
    if dtype is not None:
        w, b, mean, var = (t.to(dtype) for t in (w, b, mean, var))
    scale = w * (var + eps).rsqrt()
    return scale, b - mean * scale
