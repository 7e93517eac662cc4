"""Pure-PyTorch rpn_proposals and detection_postprocess: the oracle of the tests and the "torch"
path of the benchmarks. Same inputs, outputs and semantics as the fused ops (see their modules);
tensor ops vectorised over images and levels, a loop per image only around the NMS, which is
this package's reference batched_nms.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._reference_boxes import decode_boxes
from ._reference_nms import batched_nms

__all__ = ["rpn_proposals", "detection_postprocess"]

_XFORM_CLIP = math.log(1000.0 / 16)


def _clip_per_image(boxes: Tensor, sizes: Tensor) -> Tensor:
    """boxes [N, K, 4] clipped to sizes [N, 2] (h, w), bounds rounded to the boxes' dtype."""
    h = sizes[:, 0].to(boxes.dtype)[:, None]
    w = sizes[:, 1].to(boxes.dtype)[:, None]
    x = boxes[..., 0::2].clamp(min=0)
    y = boxes[..., 1::2].clamp(min=0)
    x = torch.minimum(x, w[..., None])
    y = torch.minimum(y, h[..., None])
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def _pad(rows: Sequence[Tensor], n: int, size: int, like: Tensor, tail: Tuple[int, ...] = ()) -> Tensor:
    out = like.new_zeros((n, size) + tail)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


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
    """Reference rpn_proposals (arguments and results as maskrcnn_fast.ops.rpn_proposals):
    boxes [N, post_nms_top_n, 4], scores [N, post_nms_top_n], counts [N] int64."""
    dtype = objectness[0].dtype
    n = image_sizes.shape[0]
    boxes, logits, levels = [], [], []
    for lvl, (ob, de, cell, (sh, sw)) in enumerate(zip(objectness, pred_bbox_deltas, cell_anchors, strides)):
        _, a, h, w = ob.shape
        # torchvision's flattening: location (y, x), then anchor.
        # Explicit sizes: with N = 0 a -1 would be ambiguous.
        flat = ob.permute(0, 2, 3, 1).reshape(n, h * w * a)
        k = min(int(pre_nms_top_n), flat.shape[1])
        val, idx = flat.topk(k, dim=1)
        ai, loc = idx % a, idx // a
        y, x = loc // w, loc % w
        shift = torch.stack([x * int(sw), y * int(sh), x * int(sw), y * int(sh)], dim=-1).to(dtype)
        anchors = shift + cell.to(dtype)[ai]
        codes = de.reshape(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, h * w * a, 4)
        codes = codes.gather(1, idx[..., None].expand(-1, -1, 4))
        dec = decode_boxes(codes.reshape(-1, 4), anchors.reshape(-1, 4)).reshape(n, k, 4)
        boxes.append(dec)
        logits.append(val)
        levels.append(torch.full((k,), lvl, dtype=torch.long, device=ob.device))
    boxes = _clip_per_image(torch.cat(boxes, 1), image_sizes)
    probs = torch.sigmoid(torch.cat(logits, 1))
    lvl = torch.cat(levels)
    ws = boxes[..., 2] - boxes[..., 0]
    hs = boxes[..., 3] - boxes[..., 1]
    valid = (ws >= min_size) & (hs >= min_size) & (probs >= score_thresh)
    out_b, out_s = [], []
    for i in range(n):
        b, s, l = boxes[i][valid[i]], probs[i][valid[i]], lvl[valid[i]]
        keep = batched_nms(b, s, l, nms_thresh)[: int(post_nms_top_n)]
        out_b.append(b[keep])
        out_s.append(s[keep])
    counts = torch.tensor([t.shape[0] for t in out_s], dtype=torch.long, device=image_sizes.device)
    like = objectness[0]
    return (
        _pad(out_b, n, int(post_nms_top_n), like, (4,)),
        _pad(out_s, n, int(post_nms_top_n), like),
        counts,
    )


def detection_postprocess(
    class_logits: Tensor,
    box_regression: Tensor,
    proposals: Tensor,
    proposal_counts: Optional[Tensor],
    image_sizes: Tensor,
    weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
    bbox_xform_clip: float = _XFORM_CLIP,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Reference detection_postprocess (arguments and results as
    maskrcnn_fast.ops.detection_postprocess): boxes [N, D, 4], scores [N, D], labels [N, D],
    counts [N], roi_index [N, D]."""
    n, p, _ = proposals.shape
    c = class_logits.shape[1]
    dtype = class_logits.dtype
    d = int(detections_per_img)
    dec = decode_boxes(box_regression, proposals.reshape(-1, 4).to(dtype), weights, bbox_xform_clip)
    boxes = _clip_per_image(dec.reshape(n, p * c, 4), image_sizes).reshape(n, p, c, 4)[:, :, 1:]
    scores = torch.softmax(class_logits, -1).reshape(n, p, c)[:, :, 1:]
    if proposal_counts is None:
        proposal_counts = torch.full((n,), p, dtype=torch.long, device=proposals.device)
    valid_roi = torch.arange(p, device=proposals.device)[None, :] < proposal_counts[:, None]
    labels = torch.arange(1, c, device=proposals.device).expand(p, c - 1)
    ws = boxes[..., 2] - boxes[..., 0]
    hs = boxes[..., 3] - boxes[..., 1]
    valid = (scores > score_thresh) & (ws >= 1e-2) & (hs >= 1e-2) & valid_roi[..., None]
    rois = torch.arange(p, device=proposals.device)[:, None].expand(p, c - 1)
    out = [[], [], [], []]
    for i in range(n):
        v = valid[i]
        b, s, lb, r = boxes[i][v], scores[i][v], labels[v], rois[v]
        keep = batched_nms(b, s, lb, nms_thresh)[:d]
        for o, t in zip(out, (b[keep], s[keep], lb[keep], r[keep] + i * p)):
            o.append(t)
    counts = torch.tensor([t.shape[0] for t in out[1]], dtype=torch.long, device=proposals.device)
    like_l = class_logits.new_zeros((), dtype=torch.long)
    return (
        _pad(out[0], n, d, class_logits, (4,)),
        _pad(out[1], n, d, class_logits),
        _pad(out[2], n, d, like_l),
        counts,
        _pad(out[3], n, d, like_l),
    )
