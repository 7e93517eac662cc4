"""The data of each epoch: which items, in which batches, loaded how.

The order of an epoch is a function of (seed, epoch) (a DistributedSampler, also in a single
process), an item's random transforms of (seed, epoch, index) (:class:`SeededItems`), and a
resumed epoch skips the batches it already saw without loading them (:class:`SkipBatches`).
Every image of the epoch is in a batch: a group's leftovers are topped up with repeats of that
group's images (torchvision's GroupedBatchSampler), so no image is skipped for being alone in
its aspect-ratio group, and batches stay full. Without groups, one group: the last short batch
is topped up alike instead of dropped.
"""
from typing import Callable, Dict, List, Optional

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..data.samplers import GroupedBatchSampler, collate_fn as detection_collate
from .distributed import DistInfo, all_max
from .reproducible import SeededItems, SkipBatches, item_seed

__all__ = ["Epochs"]


class Epochs:
    """The batches and loaders of ``dataset`` epoch by epoch, the same on every rank.

    group_ids: per-item aspect-ratio group ids (batches from one group) or None (one group).
    collate_fn: default :func:`maskrcnn_fast.data.collate_fn` (tuples of images and targets).
    Raises ValueError for an empty data set."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, *, workers: int = 0,
                 group_ids: Optional[List[int]] = None, collate_fn: Optional[Callable] = None,
                 info: Optional[DistInfo] = None, device=torch.device("cpu")):
        if len(dataset) == 0:
            raise ValueError("the data set is empty")
        self.dataset = SeededItems(dataset, seed)
        self.batch_size, self.seed, self.workers = int(batch_size), int(seed), int(workers)
        self.group_ids = group_ids
        self.collate_fn = collate_fn if collate_fn is not None else detection_collate
        self.info = info if info is not None else DistInfo()
        self.device = torch.device(device)
        self._lens: Dict[int, int] = {}

    def batches(self, epoch: int, num_batches: Optional[int] = None) -> GroupedBatchSampler:
        sampler = DistributedSampler(self.dataset, num_replicas=self.info.world_size, rank=self.info.rank,
                                     shuffle=True, seed=self.seed)
        sampler.set_epoch(epoch)
        groups = self.group_ids if self.group_ids is not None else [0] * len(self.dataset)
        return GroupedBatchSampler(sampler, groups, self.batch_size, fill_last=True, num_batches=num_batches)

    def length(self, epoch: int) -> int:
        """Steps in ``epoch``: the same on every rank (the most batches any rank has; the
        others repeat their first batches), or DistributedDataParallel would wait forever for
        the rank that ran out."""
        if epoch not in self._lens:
            self._lens[epoch] = all_max(self.batches(epoch).natural_len(), self.info, self.device)
        return self._lens[epoch]

    def loader(self, epoch: int, skip: int = 0) -> DataLoader:
        """The batches of ``epoch`` after the first ``skip``."""
        self.dataset.epoch = epoch
        # an explicit generator: creating the iterator must not draw from the global RNG
        g = torch.Generator().manual_seed(item_seed(self.seed, epoch, 0))
        batches = self.batches(epoch, num_batches=self.length(epoch))
        return DataLoader(self.dataset, batch_sampler=SkipBatches(batches, skip),
                          num_workers=self.workers, collate_fn=self.collate_fn, generator=g,
                          pin_memory=self.device.type == "cuda")
