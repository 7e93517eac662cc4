"""The box head's postprocess for all images in one op: torchvision's
``RoIHeads.postprocess_detections``.

Per image: softmax of the class logits; the class-specific boxes decoded from the regression
(``BoxCoder(weights)``, ``bbox_xform_clip``) and clipped to the image; the background class
dropped; (ROI, class) pairs with probability > ``score_thresh`` and both sides >= 1e-2 kept;
NMS per class (classes never suppress each other); the ``detections_per_img`` most probable.
Only the pairs above the threshold are decoded.

The output is padded to ``detections_per_img`` rows per image with the number of valid rows on
the device: no host synchronisation, a static fake kernel, capturable in a CUDA graph.
:func:`detections_to_list` gives torchvision's lists.

Equal to torchvision (boxes bit for bit up to the rounding of exp, labels, order) on inputs
without tied probabilities; probabilities within an ulp or two of torch.softmax's. With ties,
the lower (ROI, class) index comes first. NMS is exact per class, as torchvision's per-class
path ``_batched_nms_vanilla`` is (its coordinate-offset path, taken for <= 1000 candidates on
the CPU, rounds coordinates differently and may differ where an IoU is within rounding of
``nms_thresh``). Half and bfloat16 compute in float32 and round each stored value.

NaN and Inf: a NaN logit makes its ROI's probabilities NaN, so it yields no detection; NaN
regression values give NaN boxes, which fail the size test; +Inf coordinates are clipped.
"""
from typing import List, Optional, Sequence, Tuple

import math

import torch
from torch import Tensor

__all__ = ["detection_postprocess", "detections_to_list"]


def detection_postprocess(
    class_logits: Tensor,
    box_regression: Tensor,
    proposals: Tensor,
    proposal_counts: Optional[Tensor],
    image_sizes: Tensor,
    weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
    bbox_xform_clip: float = math.log(1000.0 / 16),
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Final detections of all images.

    Args:
        class_logits (Tensor[N * P, C]): box-head logits, row n * P + p for proposal p of image n
            (float32, float64, half or bfloat16); class 0 is the background.
        box_regression (Tensor[N * P, 4 * C]): (dx, dy, dw, dh) of each class; same dtype.
        proposals (Tensor[N, P, 4]): x1, y1, x2, y2 in input pixels, padded per image (as
            :func:`rpn_proposals` returns them); cast to the logits' dtype.
        proposal_counts (Tensor[N], optional): integer number of valid proposals of each image
            (the first ones); None: all P.
        image_sizes (Tensor[N, 2]): integer (height, width) of each image, the clip bounds.
        weights ((wx, wy, ww, wh)): the box coder's weights.
        bbox_xform_clip (float): dw, dh clamped from above before exp.
        score_thresh (float): pairs with probability <= score_thresh are dropped.
        nms_thresh (float): IoU above which a box is suppressed by a more probable one of its
            class.
        detections_per_img (int): D, the output's padded size.

    Returns:
        boxes (Tensor[N, D, 4]): x1, y1, x2, y2 in input pixels.
        scores (Tensor[N, D]): class probabilities, decreasing.
        labels (Tensor[N, D], int64): classes, in 1..C-1.
        counts (Tensor[N], int64): valid rows per image; the rows after them are zero.
        roi_index (Tensor[N, D], int64): the class_logits row each detection comes from.
    """
    return torch.ops.maskrcnn_fast.detection_postprocess.default(
        class_logits, box_regression, proposals, proposal_counts, image_sizes,
        [float(w) for w in weights], float(bbox_xform_clip), float(score_thresh),
        float(nms_thresh), detections_per_img,
    )


def detections_to_list(
    boxes: Tensor, scores: Tensor, labels: Tensor, counts: Tensor
) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
    """Padded detections to torchvision's ``postprocess_detections`` lists (one host sync).

    Returns:
        (list[Tensor[K_i, 4]], list[Tensor[K_i]], list[Tensor[K_i]]): boxes, scores, labels.
    """
    ks = counts.tolist()
    return (
        [b[:k] for b, k in zip(boxes, ks)],
        [s[:k] for s, k in zip(scores, ks)],
        [lb[:k] for lb, k in zip(labels, ks)],
    )


@torch.library.register_fake("maskrcnn_fast::detection_postprocess")
def _detection_postprocess_fake(
    class_logits, box_regression, proposals, proposal_counts, image_sizes, weights,
    bbox_xform_clip, score_thresh, nms_thresh, detections_per_img,
):
    torch._check(class_logits.dim() == 2,
                 lambda: f"class_logits must be Tensor[N * P, C], got {tuple(class_logits.shape)}")
    torch._check(class_logits.dtype.is_floating_point,
                 lambda: f"class_logits must be a floating point tensor, got {class_logits.dtype}")
    torch._check(proposals.dim() == 3 and proposals.shape[-1] == 4,
                 lambda: f"proposals must be Tensor[N, P, 4], got {tuple(proposals.shape)}")
    torch._check(class_logits.shape[0] == proposals.shape[0] * proposals.shape[1],
                 lambda: "class_logits must be Tensor[N * P, C]")
    torch._check(box_regression.dim() == 2 and box_regression.shape[1] == 4 * class_logits.shape[1],
                 lambda: f"box_regression must be Tensor[N * P, 4 * C], got {tuple(box_regression.shape)}")
    torch._check(image_sizes.dim() == 2 and image_sizes.shape[1] == 2,
                 lambda: f"image_sizes must be Tensor[N, 2], got {tuple(image_sizes.shape)}")
    torch._check(len(weights) == 4, lambda: "weights must hold 4 values")
    torch._check(nms_thresh >= 0, lambda: f"nms_thresh must be >= 0, got {nms_thresh}")
    torch._check(detections_per_img >= 0,
                 lambda: f"detections_per_img must be >= 0, got {detections_per_img}")
    n, d = proposals.shape[0], detections_per_img
    return (
        class_logits.new_empty((n, d, 4)),
        class_logits.new_empty((n, d)),
        class_logits.new_empty((n, d), dtype=torch.long),
        class_logits.new_empty((n,), dtype=torch.long),
        class_logits.new_empty((n, d), dtype=torch.long),
    )
