"""Helpers of the fused ops' references (rpn_proposals, detection_postprocess): per-image clipping
and the padded per-image outputs those ops return."""
from typing import Sequence, Tuple

import torch
from torch import Tensor


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
