"""The optimiser and the learning-rate schedule of the training loop: torchvision's detection
recipe (SGD, linear warm-up, x0.1 steps) and AdamW with a cosine decay. The schedules are plain
objects, so that LambdaLR's state_dict keeps their settings."""
import bisect
import math
from typing import Iterable, Sequence

import torch

__all__ = ["LR_SCHEDULES", "OPTIMIZERS", "WarmupCosine", "WarmupMultiStep", "check_choices", "default_lr",
           "make_lr_scheduler", "make_optimizer"]

OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("multistep", "cosine")


def check_choices(optimizer: str = "sgd", lr_schedule: str = "multistep") -> None:
    """Raises ValueError naming the argument when either is not one of the known ones."""
    for name, value, choices in (("optimizer", optimizer, OPTIMIZERS), ("lr_schedule", lr_schedule, LR_SCHEDULES)):
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


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


def make_optimizer(params: Iterable[torch.nn.Parameter], name: str, lr: float, momentum: float = 0.9,
                   weight_decay: float = 1e-4) -> torch.optim.Optimizer:
    """"sgd" (momentum, weight decay) or "adamw" (weight decay; momentum unused)."""
    check_choices(optimizer=name)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def make_lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_iters: int, milestones: Sequence[int],
                      gamma: float = 0.1, warmup_iters: int = 1000, warmup_factor: float = 0.001):
    """A LambdaLR stepped once per iteration: "multistep" (x ``gamma`` at each of ``milestones``,
    in iterations) or "cosine" (to 0 at ``total_iters``; milestones unused), both after the
    linear warm-up."""
    check_choices(lr_schedule=schedule)
    if schedule == "cosine":
        factor = WarmupCosine(total_iters, warmup_iters, warmup_factor)
    else:
        factor = WarmupMultiStep(milestones, gamma, warmup_iters, warmup_factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
