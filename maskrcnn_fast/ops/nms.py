"""Non-maximum suppression: ``nms`` and ``batched_nms``, with torchvision's signatures and results.

Both return the same indices in the same order as ``torchvision.ops.nms`` /
``torchvision.ops.batched_nms`` on inputs without tied scores (with ties, the lower index comes
first, as torchvision's CPU nms orders them). The suppression test is torchvision's bit for bit:
``inter / (area_a + area_b - inter) > iou_threshold``, computed in the input dtype for float32 and
float64 and in float32 for half and bfloat16 (torchvision's CUDA nms does the same for half; its
CPU nms has no half kernel).

Under ``torch.autocast`` boxes and scores of different dtypes are cast to float32, as
torchvision's autocast kernel does (one float16 / bfloat16 dtype is already compared in float32).
Quantized boxes and scores (CPU) give torchvision's ``qnms``: IoUs of the integer
representations (scale and zero point cancel). Both functions are scriptable.

NaN and Inf: a box with a NaN coordinate has a NaN IoU with every box, so it neither suppresses
nor is suppressed; it is kept. NaN scores sort first (above +inf, as ``torch.sort`` puts them), so
their boxes are kept and suppress others as if they had the highest scores.
"""
import torch
from torch import Tensor

__all__ = ["nms", "batched_nms"]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Visits the boxes by descending score and removes every later box whose IoU with a kept box
    exceeds ``iou_threshold``.

    Args:
        boxes (Tensor[N, 4]): x1, y1, x2, y2 (float32, float64, half or bfloat16).
        scores (Tensor[N]): one score per box, same dtype as ``boxes``.
        iou_threshold (float): boxes with IoU > iou_threshold are suppressed; must be >= 0.

    Returns:
        Tensor[K] (int64): indices of the kept boxes, by decreasing score.
    """
    return torch.ops.maskrcnn_fast.nms(boxes, scores, float(iou_threshold))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Non-maximum suppression within each category: boxes of different ``idxs`` never suppress
    each other.

    One segmented pass (sort by category and score, NMS per category in parallel), without the
    coordinate-offset trick, so half and float32 boxes keep their precision.

    Args:
        boxes (Tensor[N, 4]): x1, y1, x2, y2 (float32, float64, half or bfloat16).
        scores (Tensor[N]): one score per box, same dtype as ``boxes``.
        idxs (Tensor[N]): integer category of each box (any integer dtype, any values).
        iou_threshold (float): boxes with IoU > iou_threshold are suppressed; must be >= 0.

    Returns:
        Tensor[K] (int64): indices of the kept boxes, by decreasing score.
    """
    return torch.ops.maskrcnn_fast.batched_nms(boxes, scores, idxs, float(iou_threshold))


def _check_fake(boxes, scores, iou_threshold):
    torch._check(
        boxes.dim() == 2 and boxes.size(1) == 4,
        lambda: f"boxes must be Tensor[N, 4], got a tensor of shape {tuple(boxes.shape)}",
    )
    torch._check(
        scores.dim() == 1, lambda: f"scores must be Tensor[N], got a tensor of shape {tuple(scores.shape)}"
    )
    torch._check(
        boxes.dtype.is_floating_point and boxes.dtype == scores.dtype,
        lambda: f"boxes and scores must have the same floating dtype, got {boxes.dtype} and {scores.dtype}",
    )
    torch._check(
        boxes.device == scores.device,
        lambda: f"boxes and scores must be on the same device, got {boxes.device} and {scores.device}",
    )
    torch._check(
        boxes.size(0) == scores.size(0),
        lambda: "boxes and scores must hold the same number of boxes",
    )
    torch._check(iou_threshold >= 0, lambda: f"iou_threshold must be >= 0, got {iou_threshold}")


def _dynamic_output(boxes):
    n = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((n,), dtype=torch.long)


@torch.library.register_fake("maskrcnn_fast::nms")
def _nms_fake(boxes, scores, iou_threshold):
    _check_fake(boxes, scores, iou_threshold)
    return _dynamic_output(boxes)


@torch.library.register_fake("maskrcnn_fast::batched_nms")
def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
    _check_fake(boxes, scores, iou_threshold)
    torch._check(
        idxs.dim() == 1 and idxs.size(0) == boxes.size(0),
        lambda: f"idxs must be Tensor[N] with N = boxes.size(0), got {tuple(idxs.shape)}",
    )
    torch._check(
        not idxs.dtype.is_floating_point and not idxs.dtype.is_complex and idxs.dtype != torch.bool,
        lambda: f"idxs must be an integer tensor, got {idxs.dtype}",
    )
    torch._check(
        idxs.device == boxes.device,
        lambda: f"boxes and idxs must be on the same device, got {boxes.device} and {idxs.device}",
    )
    return _dynamic_output(boxes)
