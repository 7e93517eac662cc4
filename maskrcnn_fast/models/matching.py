"""Training-target helpers shared by the RPN and the box head: padding, matcher, sampler.

The matching itself is one ``match_boxes`` call (an OpSet member) for all images; ``Matcher``
keeps the thresholds and the labels of torchvision's Matcher. Same results as
torchvision's ``Matcher`` and ``BalancedPositiveNegativeSampler``; the sampler draws with
``torch.randperm`` in the same order (per image: positives, then negatives), so seeded runs
sample the same anchors and proposals.
"""
from typing import List, Tuple

import torch
from torch import Tensor

__all__ = ["pad_rows", "Matcher", "BalancedPositiveNegativeSampler"]


def pad_rows(rows: List[Tensor], min_rows: int = 1) -> Tuple[Tensor, Tensor]:
    """Per-image tensors (list of Tensor[K_i, ...], one dtype) -> zero-padded Tensor[N, K, ...]
    with K = max(K_i, min_rows), and the counts K_i as int64 Tensor[N] on their device."""
    k = max([r.shape[0] for r in rows] + [min_rows])
    padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    if padded.shape[1] < k:
        padded = torch.cat([padded, padded.new_zeros((padded.shape[0], k - padded.shape[1]) + padded.shape[2:])], 1)
    counts = torch.tensor([r.shape[0] for r in rows], dtype=torch.int64, device=padded.device)
    return padded, counts


class Matcher:
    """The arguments and labels of torchvision's Matcher, which ``match_boxes`` applies: each
    prediction gets the ground truth it overlaps most, or BELOW_LOW_THRESHOLD (-1) when the best
    IoU is below ``low_threshold``, or BETWEEN_THRESHOLDS (-2) when it is in [low, high). With
    ``allow_low_quality_matches``, each ground truth also keeps the predictions that overlap it
    most (ties included), whatever their IoU, matched to their own best ground truth.
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold ({low_threshold}) must be <= high_threshold ({high_threshold})")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches


class BalancedPositiveNegativeSampler:
    """Samples up to ``batch_size_per_image`` elements per image, a ``positive_fraction`` of them
    positive (label >= 1) when there are enough, the rest negative (label == 0); -1 is ignored.

    __call__(labels: list of Tensor[N_i]) -> (pos, neg): lists of bool Tensor[N_i] masks.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __call__(self, labels: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        pos_masks, neg_masks = [], []
        for lab in labels:
            positive = torch.where(lab >= 1)[0]
            negative = torch.where(lab == 0)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
            pos_pick = positive[torch.randperm(positive.numel(), device=positive.device)[:num_pos]]
            neg_pick = negative[torch.randperm(negative.numel(), device=negative.device)[:num_neg]]
            pos = torch.zeros_like(lab, dtype=torch.bool)
            neg = torch.zeros_like(lab, dtype=torch.bool)
            pos[pos_pick] = True
            neg[neg_pick] = True
            pos_masks.append(pos)
            neg_masks.append(neg)
        return pos_masks, neg_masks
