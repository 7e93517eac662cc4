"""The RPN's proposal step for all images and FPN levels in one op: torchvision's
``RegionProposalNetwork`` anchors + ``BoxCoder.decode`` + ``filter_proposals``.

Per image and level: the ``pre_nms_top_n`` highest objectness logits (torchvision's
``_get_top_n_idx``); their anchors, computed from (level, y, x, a) in the kernel and never
materialised (``AnchorGenerator``'s values bit for bit); the deltas decoded with
``BoxCoder(weights=(1, 1, 1, 1))`` and clipped to the image; boxes with a side < ``min_size``
and probabilities (sigmoid) < ``score_thresh`` dropped; NMS per level (levels never suppress
each other); then the ``post_nms_top_n`` most probable boxes over all levels.

The output is padded to a size fixed by the arguments, with the number of valid rows per image
on the device: no host synchronisation, a static fake kernel (torch.compile needs no unbacked
sizes), capturable in a CUDA graph. :func:`proposals_to_list` gives torchvision's lists.

Equal to torchvision (same boxes bit for bit in float32/float64, same order) on inputs
without tied logits or probabilities; with ties, which of the tied boxes are kept and in what
order may differ (torchvision's topk and sort leave it open; here ties go to the lower index of
torchvision's flattening, then to the lower level). NMS is exact per level, as torchvision's
per-class path ``_batched_nms_vanilla`` is (its coordinate-offset path, used for <= 1000 boxes
on the CPU, rounds coordinates differently and may differ where an IoU is within rounding of
``nms_thresh``). Half and bfloat16 compute in float32 and round each stored value to the dtype.

NaN and Inf: a NaN logit ranks first in the top-k (as ``torch.topk`` ranks it) and its
candidate is dropped (NaN probability); NaN deltas give NaN boxes, which fail the size filter
and are dropped; +Inf coordinates are clipped to the image.
"""
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["rpn_proposals", "proposals_to_list"]


def _as_int(v):
    # torchvision passes strides as 0-dim tensors; a SymInt under torch.compile stays as is.
    return int(v) if isinstance(v, Tensor) else v


def rpn_proposals(
    objectness: Sequence[Tensor],
    pred_bbox_deltas: Sequence[Tensor],
    cell_anchors: Sequence[Tensor],
    strides: Sequence[Sequence[int]],
    image_sizes: Tensor,
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_thresh: float,
    min_size: float = 1e-3,
    score_thresh: float = 0.0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Region proposals of all images.

    Args:
        objectness (list[Tensor[N, A_l, H_l, W_l]]): objectness logits of each level, as the
            RPN head returns them (float32, float64, half or bfloat16).
        pred_bbox_deltas (list[Tensor[N, 4 * A_l, H_l, W_l]]): (dx, dy, dw, dh) of each anchor,
            channel 4 * a + i for anchor a (the RPN head's layout); same dtype.
        cell_anchors (list[Tensor[A_l, 4]]): zero-centred anchors of each level
            (``AnchorGenerator.cell_anchors``); cast to the logits' dtype.
        strides (list[(s_h, s_w)]): stride of each level in input pixels
            (``image_size // grid_size``, as ``AnchorGenerator.forward`` computes them).
        image_sizes (Tensor[N, 2]): integer (height, width) of each image, the clip bounds.
        pre_nms_top_n (int): candidates per image and level before NMS.
        post_nms_top_n (int): proposals per image kept after NMS (the output's padded size).
        nms_thresh (float): IoU above which a box is suppressed by a more probable one of
            its level.
        min_size (float): boxes with width or height < min_size are dropped.
        score_thresh (float): boxes with probability < score_thresh are dropped.

    Returns:
        boxes (Tensor[N, post_nms_top_n, 4]): x1, y1, x2, y2 in input pixels.
        scores (Tensor[N, post_nms_top_n]): sigmoid probabilities, decreasing.
        counts (Tensor[N], int64): valid rows per image; the rows after them are zero.
    """
    flat_strides = [_as_int(s) for st in strides for s in (st[0], st[1])]
    return torch.ops.maskrcnn_fast.rpn_proposals.default(
        list(objectness),
        list(pred_bbox_deltas),
        list(cell_anchors),
        flat_strides,
        image_sizes,
        int(pre_nms_top_n),
        post_nms_top_n,
        float(nms_thresh),
        float(min_size),
        float(score_thresh),
    )


def proposals_to_list(boxes: Tensor, scores: Tensor, counts: Tensor) -> Tuple[List[Tensor], List[Tensor]]:
    """Padded proposals to torchvision's ``filter_proposals`` lists (one host sync).

    Args:
        boxes (Tensor[N, P, 4]), scores (Tensor[N, P]), counts (Tensor[N]): rpn_proposals' outputs.

    Returns:
        (list[Tensor[K_i, 4]], list[Tensor[K_i]]): the first counts[i] rows of each image.
    """
    ks = counts.tolist()
    return [b[:k] for b, k in zip(boxes, ks)], [s[:k] for s, k in zip(scores, ks)]


@torch.library.register_fake("maskrcnn_fast::rpn_proposals")
def _rpn_proposals_fake(
    objectness, pred_bbox_deltas, cell_anchors, strides, image_sizes, pre_nms_top_n,
    post_nms_top_n, nms_thresh, min_size, score_thresh,
):
    torch._check(len(objectness) >= 1, lambda: "objectness must hold at least one level")
    torch._check(
        len(pred_bbox_deltas) == len(objectness) == len(cell_anchors),
        lambda: "objectness, pred_bbox_deltas and cell_anchors must hold one tensor per level",
    )
    torch._check(len(strides) == 2 * len(objectness),
                 lambda: "strides must hold one (height, width) pair per level")
    torch._check(
        image_sizes.dim() == 2 and image_sizes.shape[1] == 2,
        lambda: f"image_sizes must be Tensor[N, 2], got {tuple(image_sizes.shape)}",
    )
    ob0 = objectness[0]
    torch._check(ob0.dtype.is_floating_point,
                 lambda: f"objectness must be a floating point tensor, got {ob0.dtype}")
    for ob, de in zip(objectness, pred_bbox_deltas):
        torch._check(ob.dim() == 4 and de.dim() == 4,
                     lambda: "objectness and pred_bbox_deltas must be lists of 4-d tensors")
        torch._check(ob.shape[0] == image_sizes.shape[0],
                     lambda: "objectness must hold one map per image of image_sizes")
        torch._check(de.shape[1] == 4 * ob.shape[1],
                     lambda: "pred_bbox_deltas must be Tensor[N, 4 * A, H, W]")
    torch._check(post_nms_top_n >= 0, lambda: f"post_nms_top_n must be >= 0, got {post_nms_top_n}")
    torch._check(nms_thresh >= 0, lambda: f"nms_thresh must be >= 0, got {nms_thresh}")
    n = image_sizes.shape[0]
    return (
        ob0.new_empty((n, post_nms_top_n, 4)),
        ob0.new_empty((n, post_nms_top_n)),
        ob0.new_empty((n,), dtype=torch.long),
    )
