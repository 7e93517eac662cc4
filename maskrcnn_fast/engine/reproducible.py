"""What makes a training run repeat exactly: per-item seeding, batch skipping, RNG states.

The data order of an epoch is a function of (seed, epoch) (the trainer's DistributedSampler);
an item's random transforms are a function of (seed, epoch, index) (:class:`SeededItems`); a
resumed epoch skips the batches already seen without loading them (:class:`SkipBatches`); the
global RNGs (torch, CUDA, Python, NumPy) go into the checkpoint (:func:`rng_state`).
"""
import random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["SeededItems", "SkipBatches", "item_seed", "rng_state", "seed_everything", "set_rng_state"]


def item_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + index * 104_729 + 12_345) % (2**63 - 1)


class SeededItems(Dataset):
    """Loads item ``i`` of ``dataset`` with torch, random and numpy seeded from (seed, epoch, i)
    and restores the RNGs afterwards, so random transforms repeat whatever the worker, the
    loading order or a resume."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self):
        return len(self.dataset)

    def __getattr__(self, name):  # num_classes, classes, get_height_and_width, ...
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, i):
        s = item_seed(self.seed, self.epoch, int(i))
        py, npy = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            random.seed(s)
            np.random.seed(s % 2**32)
            try:
                return self.dataset[i]
            finally:
                random.setstate(py)
                np.random.set_state(npy)


class SkipBatches(Sampler):
    """The batches of ``batch_sampler`` after the first ``skip`` (index lists only: the skipped
    batches are never loaded)."""

    def __init__(self, batch_sampler, skip: int = 0):
        self.batch_sampler = batch_sampler
        self.skip = int(skip)

    def __len__(self):
        return max(0, len(self.batch_sampler) - self.skip)

    def __iter__(self):
        for k, batch in enumerate(self.batch_sampler):
            if k >= self.skip:
                yield batch


def rng_state() -> dict:
    _, keys, pos, has_gauss, cached = np.random.get_state()
    st = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # as a tensor and plain numbers: checkpoints load with weights_only=True
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    n = st["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
