"""Pure-PyTorch detection_postprocess (torchvision's RoIHeads.postprocess_detections): the oracle
of the tests and the "torch" path of the benchmarks and the model. Same inputs, outputs and
semantics as the fused op (maskrcnn_fast.ops.detection_postprocess); tensor ops vectorised over
images, a loop per image only around the NMS, which is the reference batched_nms.
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._padded import _clip_per_image, _pad
from .box_coder import _DEFAULT_XFORM_CLIP, decode_boxes
from .nms import batched_nms

__all__ = ["detection_postprocess"]


def detection_postprocess(
    class_logits: Tensor,
    box_regression: Tensor,
    proposals: Tensor,
    proposal_counts: Optional[Tensor],
    image_sizes: Tensor,
    weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
    bbox_xform_clip: float = _DEFAULT_XFORM_CLIP,
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
