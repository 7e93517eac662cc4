"""Pure-PyTorch anchors and box coder: the oracle of the tests and the "torch" path of the
benchmarks. Vectorised tensor expressions in the input's dtype (float64 in the tests), with the
roundings of torchvision's AnchorGenerator and BoxCoder, so float32 agrees with it too.
"""
import math
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = [
    "cell_anchors",
    "grid_anchors",
    "image_anchors",
    "decode_boxes",
    "encode_boxes",
]

_DEFAULT_XFORM_CLIP = math.log(1000.0 / 16)


def cell_anchors(
    scales: Sequence[float],
    aspect_ratios: Sequence[float],
    dtype: torch.dtype = torch.float32,
    device="cpu",
) -> Tensor:
    """Zero-centred anchors of one level, Tensor[len(aspect_ratios) * len(scales), 4]:
    for each aspect ratio (height / width), for each scale, (x1, y1, x2, y2) of a box of area
    scale**2, rounded half to even."""
    s = torch.as_tensor(scales, dtype=dtype, device=device)
    r = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
    h_factor = r.sqrt()
    w_factor = 1 / h_factor
    size_wh = torch.stack(
        [torch.outer(w_factor, s).flatten(), torch.outer(h_factor, s).flatten()], dim=1
    )
    return (torch.cat([-size_wh, size_wh], dim=1) / 2).round()


def grid_anchors(
    cell_anchors: Sequence[Tensor],
    grid_sizes: Sequence[Sequence[int]],
    strides: Sequence[Sequence[int]],
) -> Tensor:
    """Anchors of all levels, Tensor[sum_l H_l * W_l * A_l, 4], in the cell anchors' dtype.

    cell_anchors (list[Tensor[A_l, 4]]): zero-centred anchors of each level.
    grid_sizes (list[(H_l, W_l)]): feature-map sizes. strides (list[(s_h, s_w)]): in pixels.
    Order: level, then location (y-major), then cell anchor. The integer shift is rounded to
    the dtype before the sum, as torchvision's int32 + float addition does.
    """
    levels = []
    for base, (gh, gw), (sh, sw) in zip(cell_anchors, grid_sizes, strides):
        dev = base.device
        xs = torch.arange(int(gw), device=dev) * int(sw)
        ys = torch.arange(int(gh), device=dev) * int(sh)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([gx, gy, gx, gy], dim=-1).to(base.dtype)  # [H, W, 4]
        levels.append((shifts[:, :, None, :] + base[None, None, :, :]).reshape(-1, 4))
    if not levels:
        raise ValueError("cell_anchors must hold at least one level")
    return torch.cat(levels)


def image_anchors(
    cell_anchors: Sequence[Tensor],
    image_size: Sequence[int],
    grid_sizes: Sequence[Sequence[int]],
    num_images: int = 1,
) -> list:
    """AnchorGenerator.forward: the strides are image_size // grid_size per dimension; the
    same anchors (one tensor each) for each of num_images images."""
    strides = [(int(image_size[0]) // int(g[0]), int(image_size[1]) // int(g[1]))
               for g in grid_sizes]
    anchors = grid_anchors(cell_anchors, grid_sizes, strides)
    return [anchors if i == 0 else anchors.clone() for i in range(num_images)]


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
