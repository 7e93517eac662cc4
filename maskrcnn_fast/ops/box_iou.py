"""box_iou: torchvision.ops.box_iou in one kernel."""
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["box_iou"]


def _default_dtype() -> torch.dtype:
    if torch.jit.is_scripting():
        return torch.empty(0).dtype
    return torch.get_default_dtype()


def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """Intersection over union of every pair of boxes, in one pass.

    Same result as ``torchvision.ops.box_iou(boxes1, boxes2, fmt)``: float32 and float64 bitwise, in
    torchvision's order of operations (areas; w, h = (min(x2) - max(x1)).clamp(min=0), ...;
    inter = w * h; union = (area1 + area2) - inter; inter / union).

    Args:
        boxes1 (Tensor[M, 4] or Tensor[..., M, 4]): x1, y1, x2, y2 (or ``fmt``).
        boxes2 (Tensor[N, 4] or Tensor[..., N, 4]): same format.
        fmt (str): ``"xyxy"`` (default), ``"xywh"`` (x1, y1, width, height) or ``"cxcywh"``
            (centre, width, height), as torchvision. The fused kernel takes ``"xyxy"`` pairs of
            2-d tensors; the other formats and batched (``...``) inputs run torchvision's
            arithmetic in plain torch (same results). torchvision's rotated formats raise a
            ValueError (use ``torchvision.ops.box_iou`` for them).

    Returns:
        Tensor[M, N] (Tensor[..., M, N]): IoU. float32 for float32, half and bfloat16 boxes
        (torchvision upcasts half: w and h are subtracted in half, everything else in float),
        float64 for float64.
        Integer boxes are computed exactly in float64 and returned in the default dtype
        (torchvision's true division; equal to it while areas are below 2**24, and exact where
        torchvision's uint8 subtraction wraps around); mixed dtypes are promoted first. Two zero-area boxes that do not overlap give 0 / 0 = NaN, and a NaN
        coordinate gives NaN, as in torchvision. Scriptable with ``torch.jit.script``.
    """
    if fmt != "xyxy" or boxes1.dim() != 2 or boxes2.dim() != 2:
        return _box_iou_torch(boxes1, boxes2, fmt)
    out_dtype: Optional[torch.dtype] = None
    if not boxes1.is_floating_point() and not boxes2.is_floating_point():
        boxes1, boxes2, out_dtype = boxes1.double(), boxes2.double(), _default_dtype()
    elif boxes1.dtype != boxes2.dtype:
        dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
        boxes1, boxes2 = boxes1.to(dtype), boxes2.to(dtype)
    iou = torch.ops.maskrcnn_fast.box_iou(boxes1, boxes2)
    if out_dtype is not None:
        iou = iou.to(out_dtype)
    return iou


def _upcast(t: Tensor) -> Tensor:
    # torchvision's guard against overflow: half -> float, small integers -> int32
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def _corners(b: Tensor, fmt: str) -> Tuple[Tensor, Tensor]:
    """(top-left, bottom-right) [..., 2] of boxes in ``fmt``, computed as torchvision does."""
    if fmt == "xyxy":
        return b[..., :2], b[..., 2:]
    if fmt == "xywh":
        return b[..., :2], b[..., :2] + b[..., 2:]
    half = b[..., 2:] / 2
    return b[..., :2] - half, b[..., :2] + half


def _box_iou_torch(boxes1: Tensor, boxes2: Tensor, fmt: str) -> Tensor:
    """torchvision's box_iou for the formats and shapes the kernel does not take."""
    if fmt not in ["xyxy", "xywh", "cxcywh"]:
        if fmt in ["cxcywhr", "xywhr", "xyxyxyxy"]:
            raise ValueError(
                f"box_iou: rotated boxes (fmt='{fmt}') are not supported; use torchvision.ops.box_iou"
            )
        raise ValueError(f"box_iou: unsupported fmt '{fmt}'; supported: 'xyxy', 'xywh', 'cxcywh'")
    if boxes1.size(-1) != 4 or boxes2.size(-1) != 4:
        raise ValueError(
            f"boxes1 and boxes2 must be Tensor[..., M, 4] and Tensor[..., N, 4], got "
            f"{list(boxes1.shape)} and {list(boxes2.shape)}"
        )
    if not boxes1.is_floating_point():  # exact: torchvision's uint8 subtraction wraps around
        boxes1 = boxes1.long()
    if not boxes2.is_floating_point():
        boxes2 = boxes2.long()
    u1, u2 = _upcast(boxes1), _upcast(boxes2)
    if fmt == "xyxy":
        area1 = (u1[..., 2] - u1[..., 0]) * (u1[..., 3] - u1[..., 1])
        area2 = (u2[..., 2] - u2[..., 0]) * (u2[..., 3] - u2[..., 1])
    else:
        area1 = u1[..., 2] * u1[..., 3]
        area2 = u2[..., 2] * u2[..., 3]
    lt1, rb1 = _corners(boxes1[..., :, None, :], fmt)
    lt2, rb2 = _corners(boxes2[..., None, :, :], fmt)
    wh = _upcast(torch.min(rb1, rb2) - torch.max(lt1, lt2)).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter / union


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
