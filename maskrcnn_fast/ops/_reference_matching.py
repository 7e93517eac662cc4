"""Pure-PyTorch box_iou and match_boxes: the oracle of the tests and the "torch" path of the
benchmarks (and of the model's ``ops="torch"``).

Same semantics as maskrcnn_fast.ops.box_iou / match_boxes: torchvision's box_iou arithmetic and
its Matcher, for all images at once. Unlike the kernels this path stores the [N, G, T] IoU
matrix.
"""
from typing import Optional

import torch
from torch import Tensor

__all__ = ["box_iou", "match_boxes"]


def _iou_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """[..., M, 4] x [..., N, 4] (same floating dtype) -> [..., M, N] in torchvision's order of
    operations: w, h subtracted in the boxes' dtype, everything else in the IoU's dtype."""
    acc = _iou_dtype(boxes1.dtype)
    a1, a2 = boxes1.to(acc), boxes2.to(acc)
    area1 = (a1[..., 2] - a1[..., 0]) * (a1[..., 3] - a1[..., 1])
    area2 = (a2[..., 2] - a2[..., 0]) * (a2[..., 3] - a2[..., 1])
    lt = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (rb - lt).to(acc).clamp_(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[..., :, None] + area2[..., None, :] - inter)


def _promote(boxes1: Tensor, boxes2: Tensor):
    if not boxes1.is_floating_point() and not boxes2.is_floating_point():
        return boxes1.double(), boxes2.double(), torch.get_default_dtype()
    dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    return boxes1.to(dtype), boxes2.to(dtype), None


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """boxes1 (Tensor[M, 4]), boxes2 (Tensor[N, 4]) x1, y1, x2, y2 -> IoU Tensor[M, N].

    torchvision.ops.box_iou; half/bfloat16 give float32; integer boxes are computed exactly in
    float64 and returned in the default dtype (torchvision's true division)."""
    b1, b2, out_dtype = _promote(boxes1, boxes2)
    iou = _iou(b1, b2)
    return iou if out_dtype is None else iou.to(out_dtype)


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
