"""Training: torchvision's detection recipe, exact resume, single process or torchrun.

Defaults follow torchvision's reference scripts: SGD (momentum 0.9, weight decay 1e-4),
lr 0.02 for 16 images scaled linearly with the total batch size, linear warm-up over 1000
iterations from a factor 0.001, then x0.1 at the given milestones. Also: AdamW (default lr
1e-3; it trains a small model from scratch about twice as fast as SGD) and a cosine decay to 0
after the warm-up (:mod:`.optim`).

Exact resume: everything random is a function of the seed and of the position in training,
or is saved in the checkpoint. The data order of an epoch depends only on (seed, epoch)
(a DistributedSampler, also in a single process); the random transforms of an item depend
only on (seed, epoch, index) (each item is loaded under its own RNG seed); the model's own
draws (the proposal samplers) use the global RNGs, whose states every rank saves. A resumed
run skips the batches the checkpoint already saw (as index lists, without loading them), so
its next losses equal those of an uninterrupted run (:mod:`.epochs`, :mod:`.reproducible`,
:mod:`.checkpointing`).

Distributed: launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK set), :func:`init_distributed`
joins the process group (nccl on CUDA, gloo on the CPU) and the model is wrapped in
DistributedDataParallel; only rank 0 prints and writes checkpoints (:mod:`.distributed`).
"""
from ..weights import load_checkpoint
from .checkpointing import CHECKPOINT_FORMAT
from .distributed import DistInfo, init_distributed
from .optim import WarmupCosine, WarmupMultiStep, default_lr
from .reproducible import seed_everything
from .trainer import NonFiniteLossError, Trainer, train

__all__ = [
    "CHECKPOINT_FORMAT",
    "DistInfo",
    "NonFiniteLossError",
    "Trainer",
    "WarmupCosine",
    "WarmupMultiStep",
    "default_lr",
    "init_distributed",
    "load_checkpoint",
    "seed_everything",
    "train",
]
