"""match_boxes: torchvision's Matcher on box_iou, for every image at once, in one kernel."""
from typing import Optional

import torch
from torch import Tensor

__all__ = ["match_boxes"]


def match_boxes(
    gt_boxes: Tensor,
    gt_counts: Tensor,
    boxes: Tensor,
    box_counts: Optional[Tensor] = None,
    high_threshold: float = 0.7,
    low_threshold: float = 0.3,
    allow_low_quality_matches: bool = False,
) -> Tensor:
    """Matches every box of every image to its image's best-overlapping ground truth.

    For each image i, the valid rows equal torchvision's ``Matcher(high_threshold,
    low_threshold, allow_low_quality_matches)(box_iou(gt_boxes[i, :gt_counts[i]],
    boxes[i, :box_counts[i]]))``. The IoU is computed on the fly with box_iou's arithmetic (the
    [N, G, T] matrix is never stored); on CUDA there is no host synchronisation.

    Args:
        gt_boxes (Tensor[N, G, 4]): ground-truth x1, y1, x2, y2 per image, padded to G rows.
        gt_counts (int64 Tensor[N]): valid ground-truth rows per image, in [0, G].
        boxes (Tensor[N, T, 4] or Tensor[T, 4]): the predictions (anchors or proposals) per
            image, or one set shared by every image (the RPN's anchors).
        box_counts (int64 Tensor[N], optional): valid rows of ``boxes`` per image, in [0, T];
            None: all T.
        high_threshold (float): IoU >= high_threshold is a match.
        low_threshold (float): IoU < low_threshold is BELOW_LOW_THRESHOLD (-1); in between is
            BETWEEN_THRESHOLDS (-2). Must be <= high_threshold.
        allow_low_quality_matches (bool): also match each ground truth's best boxes (ties
            included) to their own best ground truth, whatever their IoU.

    Returns:
        int64 Tensor[N, T]: the index (in [0, gt_counts[i])) of the best ground truth (ties: the
        lowest index, as torch.max on the CPU), -1 or -2. Padding rows (t >= box_counts[i]) and
        images without ground truth (torchvision raises there; a detector treats them as all
        background) give -1. The thresholds are compared in the IoU's dtype (float32 for
        float32/half/bfloat16 boxes), as torch compares a tensor with a Python float. A NaN IoU
        (NaN coordinates, or two zero-area boxes) behaves as in torchvision: it is the maximum
        of its box, which then keeps that ground truth's index whatever the thresholds, and a
        ground truth with a NaN IoU has no low-quality matches. Out-of-range counts raise on the
        CPU and are clamped to [0, G] / [0, T] on CUDA. gt_boxes and boxes of different dtypes
        are promoted first.
    """
    if gt_boxes.dtype != boxes.dtype:
        dtype = torch.promote_types(gt_boxes.dtype, boxes.dtype)
        gt_boxes, boxes = gt_boxes.to(dtype), boxes.to(dtype)
    return torch.ops.maskrcnn_fast.match_boxes(
        gt_boxes, gt_counts, boxes, box_counts, float(high_threshold), float(low_threshold),
        bool(allow_low_quality_matches),
    )


@torch.library.register_fake("maskrcnn_fast::match_boxes")
def _match_boxes_fake(gt_boxes, gt_counts, boxes, box_counts, high_threshold, low_threshold,
                      allow_low_quality_matches):
    torch._check(gt_boxes.dim() == 3 and gt_boxes.shape[2] == 4,
                 lambda: "gt_boxes must be Tensor[N, G, 4]")
    torch._check(boxes.dim() in (2, 3) and boxes.shape[-1] == 4,
                 lambda: "boxes must be Tensor[N, T, 4] or Tensor[T, 4]")
    torch._check(boxes.dim() == 2 or boxes.shape[0] == gt_boxes.shape[0],
                 lambda: "boxes must be Tensor[N, T, 4] with N = gt_boxes.size(0)")
    torch._check(gt_boxes.device == boxes.device,
                 lambda: f"gt_boxes and boxes must be on the same device, got {gt_boxes.device} "
                         f"and {boxes.device}")
    torch._check(gt_counts.dim() == 1 and gt_counts.shape[0] == gt_boxes.shape[0]
                 and gt_counts.dtype == torch.int64,
                 lambda: "gt_counts must be an int64 Tensor[N]")
    torch._check(box_counts is None or (box_counts.dim() == 1 and box_counts.dtype == torch.int64
                                        and box_counts.shape[0] == gt_boxes.shape[0]),
                 lambda: "box_counts must be an int64 Tensor[N]")
    torch._check(low_threshold <= high_threshold,
                 lambda: f"low_threshold ({low_threshold}) must be <= high_threshold "
                         f"({high_threshold})")
    return gt_boxes.new_empty((gt_boxes.shape[0], boxes.shape[-2]), dtype=torch.int64)
