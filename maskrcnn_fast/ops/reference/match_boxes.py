"""Pure-PyTorch match_boxes: the oracle of the tests and the "torch" path of the benchmarks and
the model. torchvision's Matcher on box_iou for all images at once; unlike the kernels this path
stores the [N, G, T] IoU matrix.
"""
from typing import Optional

import torch
from torch import Tensor

from .box_iou import _iou, _promote

__all__ = ["match_boxes"]


def match_boxes(
    gt_boxes: Tensor,
    gt_counts: Tensor,
    boxes: Tensor,
    box_counts: Optional[Tensor],
    high_threshold: float,
    low_threshold: float,
    allow_low_quality_matches: bool = False,
) -> Tensor:
    """torchvision's ``Matcher(high, low, allow_low_quality_matches)(box_iou(gt_i, boxes_i))`` for
    every image at once; see maskrcnn_fast.ops.match_boxes for the arguments.

    gt_boxes Tensor[N, G, 4], gt_counts int64 Tensor[N]; boxes Tensor[N, T, 4] or Tensor[T, 4];
    box_counts int64 Tensor[N] or None -> int64 Tensor[N, T]."""
    if low_threshold > high_threshold:
        raise ValueError(f"low_threshold ({low_threshold}) must be <= high_threshold ({high_threshold})")
    gt_boxes, boxes, _ = _promote(gt_boxes, boxes)
    n, g = gt_boxes.shape[:2]
    t = boxes.shape[-2]
    device = gt_boxes.device
    out = torch.full((n, t), -1, dtype=torch.int64, device=device)
    if g == 0 or t == 0 or n == 0:
        return out
    if boxes.dim() == 2:
        boxes = boxes[None]
    iou = _iou(gt_boxes, boxes)  # [N, G, T]
    gt_valid = torch.arange(g, device=device)[None, :] < gt_counts[:, None]  # [N, G]
    if box_counts is None:
        box_valid = torch.ones((n, t), dtype=torch.bool, device=device)
    else:
        box_valid = torch.arange(t, device=device)[None, :] < box_counts[:, None]  # [N, T]
    lowest = float("-inf")
    best, arg = iou.masked_fill(~gt_valid[:, :, None], lowest).max(dim=1)  # [N, T]
    # compared in the IoU's dtype, as torch compares a tensor with a Python float; a NaN IoU
    # fails both tests and keeps its index, as in torchvision
    matches = torch.where(best < low_threshold, -1, torch.where(best < high_threshold, -2, arg))
    if allow_low_quality_matches:
        best_gt = iou.masked_fill(~box_valid[:, None, :], lowest).max(dim=2).values  # [N, G]
        hit = (iou == best_gt[:, :, None]) & gt_valid[:, :, None] & box_valid[:, None, :]
        matches = torch.where(hit.any(dim=1), arg, matches)
    keep = box_valid & (gt_counts > 0)[:, None]
    return torch.where(keep, matches, out)
