"""Learning-rate defaults and schedules of the training loop (torchvision's detection recipe,
and a cosine alternative), as plain objects so that LambdaLR's state_dict keeps their settings."""
import bisect
import math
from typing import Sequence

__all__ = ["LR_SCHEDULES", "OPTIMIZERS", "WarmupCosine", "WarmupMultiStep", "default_lr"]

OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("multistep", "cosine")


def default_lr(total_batch_size: int, optimizer: str = "sgd") -> float:
    """SGD: torchvision's 0.02 for 16 images, scaled linearly. AdamW: 1e-3 (its step size
    does not grow with the gradient's scale, so no batch scaling)."""
    if optimizer == "adamw":
        return 1e-3
    return 0.02 * total_batch_size / 16


class WarmupMultiStep:
    """lr factor at iteration ``it``: linear warm-up from ``warmup_factor`` to 1 over
    ``warmup_iters``, times ``gamma`` per milestone (iterations) passed. A plain object, so
    LambdaLR's state_dict keeps its settings."""

    def __init__(self, milestones: Sequence[int], gamma: float = 0.1, warmup_iters: int = 1000,
                 warmup_factor: float = 0.001):
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)

    def __call__(self, it: int) -> float:
        f = self.gamma ** bisect.bisect_right(self.milestones, it)
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            f *= self.warmup_factor * (1 - alpha) + alpha
        return f


class WarmupCosine:
    """lr factor at iteration ``it``: linear warm-up from ``warmup_factor`` to 1 over
    ``warmup_iters``, then half a cosine from 1 down to 0 at ``total_iters``."""

    def __init__(self, total_iters: int, warmup_iters: int = 1000, warmup_factor: float = 0.001):
        self.total_iters = int(total_iters)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)

    def __call__(self, it: int) -> float:
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            return self.warmup_factor * (1 - alpha) + alpha
        t = min(1.0, (it - self.warmup_iters) / max(1, self.total_iters - self.warmup_iters))
        return 0.5 * (1 + math.cos(math.pi * t))
