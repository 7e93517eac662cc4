"""Pure-PyTorch box_iou: the oracle of the tests and the "torch" path of the benchmarks and the
model. torchvision's box_iou arithmetic, operation for operation; match_boxes' reference computes
its IoU with the same function.
"""
import torch
from torch import Tensor

__all__ = ["box_iou"]


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
