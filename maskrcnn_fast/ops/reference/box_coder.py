"""Pure-PyTorch box coder (torchvision's BoxCoder, then clip_boxes_to_image): the oracle of the
tests and the "torch" path of the benchmarks and the model. Vectorised tensor expressions in the
input's dtype (float64 in the tests), with torchvision's roundings, so float32 agrees with it too.
"""
import math
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["BoxCoder", "decode_boxes", "encode_boxes"]

# torchvision's bbox_xform_clip: exp() of a larger dw, dh would overflow.
_DEFAULT_XFORM_CLIP = math.log(1000.0 / 16)


def decode_boxes(
    rel_codes: Tensor,
    boxes: Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    bbox_xform_clip: float = _DEFAULT_XFORM_CLIP,
    image_size: Optional[Sequence[int]] = None,
) -> Tensor:
    """Tensor[K, 4 * C]: rel_codes (Tensor[K, 4 * C], (dx, dy, dw, dh) per class) applied to
    boxes (Tensor[K, 4], x1, y1, x2, y2), clipped to image_size (h, w) when given."""
    boxes = boxes.to(rel_codes.dtype)
    k, cols = boxes.shape[0], rel_codes.shape[1]
    # Explicit class count: with K = 0, a -1 would be ambiguous.
    codes = rel_codes.reshape(k, cols // 4, 4)
    x1, y1, x2, y2 = (boxes[:, i : i + 1] for i in range(4))
    w = x2 - x1
    h = y2 - y1
    cx = x1 + 0.5 * w
    cy = y1 + 0.5 * h
    wx, wy, ww, wh = weights
    dx = codes[..., 0] / wx
    dy = codes[..., 1] / wy
    dw = (codes[..., 2] / ww).clamp(max=bbox_xform_clip)
    dh = (codes[..., 3] / wh).clamp(max=bbox_xform_clip)
    ctr_x = dx * w + cx
    ctr_y = dy * h + cy
    half_w = 0.5 * (dw.exp() * w)
    half_h = 0.5 * (dh.exp() * h)
    out = torch.stack([ctr_x - half_w, ctr_y - half_h, ctr_x + half_w, ctr_y + half_h], dim=-1)
    if image_size is not None:
        height, width = image_size
        out[..., 0::2] = out[..., 0::2].clamp(min=0, max=width)
        out[..., 1::2] = out[..., 1::2].clamp(min=0, max=height)
    return out.reshape(k, cols)


def encode_boxes(
    reference_boxes: Tensor, proposals: Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
) -> Tensor:
    """Tensor[K, 4]: the (dx, dy, dw, dh) that decode proposals (Tensor[K, 4]) into
    reference_boxes (Tensor[K, 4]); the weights take reference_boxes' dtype."""
    wt = torch.as_tensor(weights, dtype=reference_boxes.dtype, device=reference_boxes.device)

    def frame(b):
        w = b[:, 2] - b[:, 0]
        h = b[:, 3] - b[:, 1]
        return w, h, b[:, 0] + 0.5 * w, b[:, 1] + 0.5 * h

    pw, ph, pcx, pcy = frame(proposals)
    rw, rh, rcx, rcy = frame(reference_boxes)
    return torch.stack(
        [
            wt[0] * (rcx - pcx) / pw,
            wt[1] * (rcy - pcy) / ph,
            wt[2] * torch.log(rw / pw),
            wt[3] * torch.log(rh / ph),
        ],
        dim=1,
    )


class BoxCoder:
    """Reference of :class:`maskrcnn_fast.ops.BoxCoder`: ``encode_single`` and ``decode_single``
    (with the clip to ``image_size`` when given)."""

    def __init__(self, weights, bbox_xform_clip: float = _DEFAULT_XFORM_CLIP):
        self.weights, self.bbox_xform_clip = weights, bbox_xform_clip

    def encode_single(self, reference_boxes, proposals):
        return encode_boxes(reference_boxes, proposals, self.weights)

    def decode_single(self, rel_codes, boxes, image_size=None):
        return decode_boxes(rel_codes, boxes, self.weights, self.bbox_xform_clip, image_size)
