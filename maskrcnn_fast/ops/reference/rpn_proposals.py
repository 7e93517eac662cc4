"""Pure-PyTorch rpn_proposals: the oracle of the tests and the "torch" path of the benchmarks and
the model. Same inputs, outputs and semantics as the fused op (maskrcnn_fast.ops.rpn_proposals);
tensor ops vectorised over images and levels, a loop per image only around the NMS, which is the
reference batched_nms.
"""
from typing import Sequence, Tuple

import torch
from torch import Tensor

from ._padded import _clip_per_image, _pad
from .box_coder import decode_boxes
from .nms import batched_nms

__all__ = ["rpn_proposals"]


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
