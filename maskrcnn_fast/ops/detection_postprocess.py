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

    Differentiable, as torchvision's post-processing is: the scores with respect to
    ``class_logits``, the boxes with respect to ``box_regression`` (and ``proposals``), the
    selection (threshold, NMS, top-k) held fixed. Under CUDA autocast it computes in float32
    and returns float32 scores and boxes, as torchvision's softmax and exp do there.
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


# ---- autograd ------------------------------------------------------------------------------
# The selection (threshold, NMS, top-k) is piecewise constant; each detection's score and box are
# smooth functions of its class_logits row, its box_regression entries and its proposal, as in
# torchvision's postprocess_detections (softmax, then BoxCoder.decode and clip_boxes_to_image,
# then indexing). The backward recomputes those functions for the detected rows only, with
# torch ops, and differentiates them: the gradients of torchvision's model (saliency maps,
# adversarial inputs) reach the logits, the regression and, when it requires grad, the proposals.


def _decode_rows(codes: Tensor, ref: Tensor, weights: Sequence[float], bbox_xform_clip: float) -> Tensor:
    """BoxCoder.decode_single for one (dx, dy, dw, dh) per row: [V, 4] against [V, 4]."""
    wx, wy, ww, wh = weights
    widths = ref[:, 2] - ref[:, 0]
    heights = ref[:, 3] - ref[:, 1]
    ctr_x = ref[:, 0] + 0.5 * widths
    ctr_y = ref[:, 1] + 0.5 * heights
    dw = torch.clamp(codes[:, 2] / ww, max=bbox_xform_clip)
    dh = torch.clamp(codes[:, 3] / wh, max=bbox_xform_clip)
    pred_ctr_x = codes[:, 0] / wx * widths + ctr_x
    pred_ctr_y = codes[:, 1] / wy * heights + ctr_y
    half_w = 0.5 * (torch.exp(dw) * widths)
    half_h = 0.5 * (torch.exp(dh) * heights)
    return torch.stack([pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h], 1)


def _setup_context(ctx, inputs, output):
    (class_logits, box_regression, proposals, _proposal_counts, image_sizes, weights, bbox_xform_clip,
     _score_thresh, _nms_thresh, _detections_per_img) = inputs
    _boxes, _scores, labels, counts, roi_index = output
    ctx.save_for_backward(class_logits, box_regression, proposals, image_sizes, labels, counts, roi_index)
    ctx.weights = list(weights)
    ctx.bbox_xform_clip = float(bbox_xform_clip)


def _backward(ctx, grad_boxes, grad_scores, _grad_labels, _grad_counts, _grad_roi_index):
    class_logits, box_regression, proposals, image_sizes, labels, counts, roi_index = ctx.saved_tensors
    n, d = labels.shape
    valid = torch.arange(d, device=labels.device)[None, :] < counts[:, None]
    rows, labs = roi_index[valid], labels[valid]
    image = torch.arange(n, device=labels.device)[:, None].expand(n, d)[valid]
    want = [i for i in range(3) if ctx.needs_input_grad[i]]
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(i in want)
                  for i, t in enumerate((class_logits, box_regression, proposals))]
        cl, br, prop = leaves
        outs, grads = [], []
        if grad_scores is not None:
            scores = torch.softmax(cl[rows], -1).gather(1, labs[:, None])[:, 0]
            outs.append(scores)
            grads.append(grad_scores[valid])
        if grad_boxes is not None:
            c = cl.shape[1]
            codes = br.reshape(-1, c, 4)[rows, labs]
            ref = prop.reshape(-1, 4)[rows].to(codes.dtype)
            boxes = _decode_rows(codes, ref, ctx.weights, ctx.bbox_xform_clip)
            size = image_sizes.to(boxes.device)[image].to(boxes.dtype)  # (h, w)
            zero = torch.zeros_like(size[:, :1])
            x = boxes[:, 0::2].clamp(min=zero, max=size[:, 1:2])
            y = boxes[:, 1::2].clamp(min=zero, max=size[:, 0:1])
            outs.append(torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1))
            grads.append(grad_boxes[valid])
        inputs = [leaves[i] for i in want]
        got = torch.autograd.grad(outs, inputs, grads, allow_unused=True) if outs and inputs else []
    result = [None, None, None]
    for i, g in zip(want, got):
        result[i] = g if g is not None else torch.zeros_like(leaves[i])
    return tuple(result) + (None,) * 7


torch.library.register_autograd(
    "maskrcnn_fast::detection_postprocess", _backward, setup_context=_setup_context
)
