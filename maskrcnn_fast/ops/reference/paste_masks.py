"""Pure-PyTorch mask pasting (torchvision's paste_masks_in_image), vectorised over all masks.

Bilinear resizing is separable, so pasting mask n is ``Ry[n] @ mask[n] @ Rx[n].T`` with Ry
[H, M] and Rx [W, M] interpolation matrices holding two weights per row (zero rows outside the
box or the image). Two batched matmuls paste every mask at once, without a per-mask loop and
without materialising resized masks or index tensors of the output's size.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["paste_masks", "paste_masks_batched"]

_MAX_COORD = 2.0**60


def _expanded_int_boxes(boxes: Tensor, scale: float) -> Tuple[Tensor, Tensor]:
    # torchvision's expand_boxes(...).to(int64), op for op in the boxes' dtype.
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    w_half = w_half * scale
    h_half = h_half * scale
    e = torch.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], dim=1)
    valid = (e.abs() < _MAX_COORD).all(dim=1)  # False for NaN and +-Inf
    e = torch.where(valid[:, None], e, torch.zeros_like(e))
    return e.to(torch.int64), valid


def _interp_matrix(origin: Tensor, size: Tensor, begin: Tensor, end: Tensor, length: int,
                   in_size: int, dtype: torch.dtype) -> Tensor:
    """[N, length, in_size]: row d holds the bilinear weights (align_corners=False) of output
    pixel d, which is pixel d - origin of a resize from in_size to size; zero outside
    [begin, end)."""
    n = origin.shape[0]
    d = torch.arange(length, device=origin.device)
    dst = (d[None, :] - origin[:, None]).to(dtype)
    scale = (torch.tensor(float(in_size), dtype=dtype, device=origin.device) / size.to(dtype))
    src = (scale[:, None] * (dst + 0.5) - 0.5).clamp_min(0)
    i0 = src.floor().to(torch.int64).clamp_max(in_size - 1)
    w1 = (src - i0.to(dtype)).clamp(0, 1)
    i1 = i0 + (i0 < in_size - 1).to(torch.int64)
    inside = ((d[None, :] >= begin[:, None]) & (d[None, :] < end[:, None])).to(dtype)
    r = torch.zeros(n, length, in_size, dtype=dtype, device=origin.device)
    r.scatter_add_(2, i0[..., None], ((1 - w1) * inside)[..., None])
    r.scatter_add_(2, i1[..., None], (w1 * inside)[..., None])
    return r


def _paste(masks: Tensor, boxes: Tensor, image_index: Optional[Tensor],
           image_sizes: Optional[Tensor], out_h: int, out_w: int, padding: int,
           threshold: Optional[float]) -> Tensor:
    if masks.dim() == 4:
        masks = masks[:, 0]
    n, mh, mw = masks.shape
    dtype = torch.promote_types(masks.dtype, torch.float32)
    dev = masks.device
    box, valid = _expanded_int_boxes(boxes, float(mw + 2 * padding) / mw)
    if image_sizes is None:
        im = torch.tensor([[out_h, out_w]], dtype=torch.int64, device=dev).expand(n, 2)
    else:
        idx = (torch.zeros(n, dtype=torch.int64, device=dev) if image_index is None
               else image_index)
        im = image_sizes.to(dev)[idx]
    im_h = im[:, 0].clamp(max=out_h)
    im_w = im[:, 1].clamp(max=out_w)
    x_begin = box[:, 0].clamp_min(0)
    y_begin = box[:, 1].clamp_min(0)
    # an invalid box pastes nothing
    x_end = torch.where(valid, torch.minimum(box[:, 2] + 1, im_w), x_begin).maximum(x_begin)
    y_end = torch.where(valid, torch.minimum(box[:, 3] + 1, im_h), y_begin).maximum(y_begin)
    w = (box[:, 2] - box[:, 0] + 1).clamp_min(1)
    h = (box[:, 3] - box[:, 1] + 1).clamp_min(1)
    # Built over the padded mask, then the padding columns (zero pixels) are dropped.
    rx = _interp_matrix(box[:, 0], w, x_begin, x_end, out_w, mw + 2 * padding, dtype)
    ry = _interp_matrix(box[:, 1], h, y_begin, y_end, out_h, mh + 2 * padding, dtype)
    rx = rx[:, :, padding:padding + mw]
    ry = ry[:, :, padding:padding + mh]
    # x first, then y, as the resize does.
    out = torch.bmm(ry, torch.bmm(masks.to(dtype), rx.transpose(1, 2))).to(masks.dtype)
    if threshold is not None:
        return (out > threshold).to(torch.uint8)
    return out


def paste_masks(masks: Tensor, boxes: Tensor, img_shape: Tuple[int, int], padding: int = 1,
                threshold: Optional[float] = None) -> Tensor:
    """Reference of :func:`maskrcnn_fast.ops.paste_masks`: masks [N, 1, M, M] or [N, M, M],
    boxes [N, 4] (x1, y1, x2, y2), img_shape (H, W) -> [N, 1, H, W] (uint8 with a threshold).
    Works in float64. Masks containing NaN or Inf spread it over their whole plane."""
    out = _paste(masks, boxes, None, None, int(img_shape[0]), int(img_shape[1]), padding,
                 threshold)
    return out[:, None]


def paste_masks_batched(masks: Tensor, boxes: Tensor, image_index: Tensor,
                        image_sizes: Union[Tensor, Sequence[Tuple[int, int]]], padding: int = 1,
                        threshold: Optional[float] = None,
                        out_size: Optional[Tuple[int, int]] = None) -> Tensor:
    """Reference of :func:`maskrcnn_fast.ops.paste_masks_batched` -> [N, 1, H, W]."""
    sizes = (image_sizes if isinstance(image_sizes, Tensor)
             else torch.tensor([list(s) for s in image_sizes], dtype=torch.int64).reshape(-1, 2))
    if out_size is None:
        out_size = tuple(int(v) for v in sizes.amax(0)) if sizes.shape[0] else (0, 0)
    out = _paste(masks, boxes, image_index, sizes, int(out_size[0]), int(out_size[1]), padding,
                 threshold)
    return out[:, None]
