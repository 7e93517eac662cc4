"""box_iou: torchvision.ops.box_iou in one kernel."""
import torch
from torch import Tensor

__all__ = ["box_iou"]


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair of boxes, in one pass.

    Same result as ``torchvision.ops.box_iou(boxes1, boxes2)``: float32 and float64 bitwise, in
    torchvision's order of operations (areas; w, h = (min(x2) - max(x1)).clamp(min=0), ...;
    inter = w * h; union = (area1 + area2) - inter; inter / union).

    Args:
        boxes1 (Tensor[M, 4]): x1, y1, x2, y2.
        boxes2 (Tensor[N, 4]): x1, y1, x2, y2.

    Returns:
        Tensor[M, N]: IoU. float32 for float32, half and bfloat16 boxes (torchvision upcasts
        half: w and h are subtracted in half, everything else in float), float64 for float64.
        Integer boxes are computed exactly in float64 and returned in the default dtype
        (torchvision's true division; equal to it while areas are below 2**24, and exact where
        torchvision's uint8 subtraction wraps around); mixed dtypes are promoted first. Two zero-area boxes that do not overlap give 0 / 0 = NaN, and a NaN
        coordinate gives NaN, as in torchvision.
    """
    out_dtype = None
    if not boxes1.is_floating_point() and not boxes2.is_floating_point():
        boxes1, boxes2, out_dtype = boxes1.double(), boxes2.double(), torch.get_default_dtype()
    elif boxes1.dtype != boxes2.dtype:
        dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
        boxes1, boxes2 = boxes1.to(dtype), boxes2.to(dtype)
    iou = torch.ops.maskrcnn_fast.box_iou(boxes1, boxes2)
    return iou if out_dtype is None else iou.to(out_dtype)


def _iou_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


@torch.library.register_fake("maskrcnn_fast::box_iou")
def _box_iou_fake(boxes1, boxes2):
    torch._check(boxes1.device == boxes2.device,
                 lambda: f"boxes1 and boxes2 must be on the same device, got {boxes1.device} "
                         f"and {boxes2.device}")
    torch._check(boxes1.dim() == 2 and boxes1.shape[1] == 4, lambda: "boxes1 must be Tensor[M, 4]")
    torch._check(boxes2.dim() == 2 and boxes2.shape[1] == 4, lambda: "boxes2 must be Tensor[N, 4]")
    torch._check(boxes1.dtype == boxes2.dtype,
                 lambda: f"boxes1 and boxes2 must have the same dtype, got {boxes1.dtype} and "
                         f"{boxes2.dtype}")
    torch._check(boxes1.is_floating_point(), lambda: "boxes1 must be a floating point tensor")
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]), dtype=_iou_dtype(boxes1.dtype))
