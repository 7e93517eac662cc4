"""Batching: aspect-ratio grouped batches and the detection collate function.

Images in a batch are padded to the largest one; grouping by aspect ratio (portrait with
portrait) keeps the padding, and so the wasted compute, small.
"""
import bisect
import math
from collections import Counter
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Sampler

__all__ = ["GroupedBatchSampler", "aspect_ratio_bins", "collate_fn", "create_aspect_ratio_groups"]


def collate_fn(batch: Sequence[Tuple]) -> Tuple[List, List]:
    """[(image, target), ...] -> (list of images, list of targets): sizes differ, so no stacking."""
    images, targets = [], []
    for image, target in batch:
        images.append(image)
        targets.append(target)
    return images, targets


def aspect_ratio_bins(k: int) -> List[float]:
    """Bin edges for width / height: ``2 * k + 1`` edges spaced evenly in log2 between 1/2 and 2
    (so ``2 * k + 2`` groups) when k > 0, else the single edge 1.0 (portrait vs landscape)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k == 0:
        return [1.0]
    n = 2 * k
    return [2.0 ** (-1.0 + 2.0 * i / n) for i in range(n + 1)]


def _heights_and_widths(dataset) -> List[Tuple[int, int]]:
    # A Subset maps its indices to the wrapped data set's, recursively.
    if isinstance(dataset, torch.utils.data.Subset):
        inner = _heights_and_widths(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    if not hasattr(dataset, "get_height_and_width"):
        raise TypeError(
            f"{type(dataset).__name__} has no get_height_and_width(i); aspect-ratio grouping "
            "needs it to avoid decoding every image"
        )
    return [tuple(int(v) for v in dataset.get_height_and_width(i)) for i in range(len(dataset))]


def create_aspect_ratio_groups(dataset, k: int = 0) -> List[int]:
    """Group id of every item of ``dataset``: the bin of its width / height among
    :func:`aspect_ratio_bins` ``(k)``. Uses ``dataset.get_height_and_width(i)`` (through
    ``torch.utils.data.Subset`` too)."""
    bins = aspect_ratio_bins(k)
    groups = []
    for h, w in _heights_and_widths(dataset):
        if h <= 0 or w <= 0:
            raise ValueError(f"image sizes must be positive, got height={h}, width={w}")
        groups.append(bisect.bisect_right(bins, w / h))
    return groups


class GroupedBatchSampler(Sampler[List[int]]):
    """Batches of ``batch_size`` indices drawn from ``sampler`` where every batch holds one group.

    Indices come in the sampler's order and wait in their group's buffer until it is full. At the
    end, what is left in each group's buffer becomes one more batch of that group: a short one,
    or with ``fill_last`` one topped up with the group's first indices of the epoch, repeated as
    needed (torchvision's GroupedBatchSampler completes its leftovers so; it stops at
    ``len(sampler) // batch_size`` batches, which can leave an image out of every epoch, this
    one never does); with ``drop_last`` none. Every index the sampler yields appears in a batch
    unless ``drop_last``. Works with a ``DistributedSampler`` (``set_epoch`` is forwarded).

    Args:
        sampler (Sampler[int]): e.g. RandomSampler, SequentialSampler, DistributedSampler.
        group_ids (list of int): group of each data set index (:func:`create_aspect_ratio_groups`).
        batch_size (int): batch size.
        drop_last (bool): drop each group's leftovers.
        fill_last (bool): complete each group's leftovers to a full batch (without drop_last).
        num_batches (int, optional): when the epoch has fewer batches, its first ones are
            repeated until it has this many (processes of a distributed run must step
            together; their shards can group into different counts). More are not cut.
    """

    def __init__(self, sampler, group_ids: Sequence[int], batch_size: int, drop_last: bool = False,
                 fill_last: bool = False, num_batches: Optional[int] = None):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if drop_last and fill_last:
            raise ValueError("drop_last and fill_last exclude each other")
        if num_batches is not None and num_batches < 0:
            raise ValueError(f"num_batches must be >= 0, got {num_batches}")
        self.sampler = sampler
        self.group_ids = [int(g) for g in group_ids]
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.fill_last = fill_last
        self.num_batches = num_batches

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def _grouped(self) -> Iterator[List[int]]:
        buffers: Dict[int, List[int]] = {}
        seen: Dict[int, List[int]] = {}
        for idx in self.sampler:
            g = self.group_ids[idx]
            buf = buffers.setdefault(g, [])
            buf.append(idx)
            if self.fill_last:
                seen.setdefault(g, []).append(idx)
            if len(buf) == self.batch_size:
                yield buf
                buffers[g] = []
        if self.drop_last:
            return
        # leftovers in the order their groups first appeared: deterministic for a seed
        for g, buf in buffers.items():
            if not buf:
                continue
            if self.fill_last:
                need = self.batch_size - len(buf)
                pool = seen[g]
                buf = buf + (pool * (need // len(pool) + 1))[:need]
            yield buf

    def __iter__(self) -> Iterator[List[int]]:
        first: List[List[int]] = []
        for batch in self._grouped():
            if self.num_batches is not None and len(first) < self.num_batches:
                first.append(batch)
            yield batch
        n, k = len(first), 0
        while self.num_batches is not None and n and n + k < self.num_batches:
            yield list(first[k % n])
            k += 1

    def _group_counts(self) -> Counter:
        # A sampler over the whole data set (Random, Sequential) holds every index once: count
        # from group_ids without iterating it (iterating a RandomSampler would draw from the
        # global RNG). Otherwise (DistributedSampler: a deterministic shard) iterate it.
        try:
            whole = len(self.sampler) == len(self.group_ids) and not hasattr(self.sampler, "num_replicas")
        except TypeError:
            whole = False
        if whole and not getattr(self.sampler, "replacement", False):
            return Counter(self.group_ids)
        return Counter(self.group_ids[i] for i in self.sampler)

    def natural_len(self) -> int:
        """Batches in an epoch before ``num_batches`` pads it."""
        counts = self._group_counts().values()
        if self.drop_last:
            return sum(c // self.batch_size for c in counts)
        return sum(math.ceil(c / self.batch_size) for c in counts)

    def __len__(self) -> int:
        n = self.natural_len()
        return max(n, self.num_batches) if self.num_batches is not None and n else n
