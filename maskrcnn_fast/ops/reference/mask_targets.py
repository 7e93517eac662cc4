"""Pure-PyTorch mask targets (torchvision's ``project_masks_on_boxes`` for all images at once):
the float64 oracle of the tests and the "torch" path of the benchmarks and the model.

ROIAlign of one plane is separable: every sample's bilinear weight is a row weight times a
column weight, and a sample outside the plane has a zero weight on the axis where it falls out.
So one proposal's M x M target is ``Ay @ crop @ Ax.T / count``, where ``Ay[p, r]`` sums the row
weights that the samples of bin row ``p`` put on mask row ``r`` (``Ax`` likewise for columns)
and ``crop`` is the part of the mask the proposal covers. That is the same sum as ROIAlign's,
in another order: equal up to rounding, an independent check of the kernels. Per image, the
proposals are batched (``bmm``) in chunks of bounded memory, largest first; the masks are read
in their own dtype (no full-size float copy).
"""
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["mask_targets"]

# Same cap as csrc/common/roi_align_math.h: an adaptive grid stops growing here.
_MAX_ADAPTIVE_GRID = 1024
# Elements of the largest per-chunk tensor (the gathered crops and their indices).
_CHUNK_ELEMENTS = 1 << 22


def _flatten(gt_masks, boxes, matched_idxs, image_index):
    if isinstance(boxes, Tensor):
        if image_index is None:
            image_index = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
        return boxes, matched_idxs, image_index
    boxes, matched_idxs = list(boxes), list(matched_idxs)
    if len(boxes) != len(gt_masks) or len(matched_idxs) != len(gt_masks):
        raise ValueError(
            f"boxes and matched_idxs must have one entry per image ({len(gt_masks)}), "
            f"got {len(boxes)} and {len(matched_idxs)}"
        )
    if not boxes:
        return torch.empty(0, 4), torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)
    device = boxes[0].device
    index = [torch.full((b.shape[0],), i, dtype=torch.int64, device=device) for i, b in enumerate(boxes)]
    return torch.cat(boxes), torch.cat([m.to(torch.int64) for m in matched_idxs]), torch.cat(index)


def _axis_matrix(start, bin_size, grid, size, first, m, gmax, length):
    """Weights [n, m, length] of mask rows first .. first + length - 1 (or columns) for the m
    bins of n proposals along one axis: ROIAlign's sample positions and bilinear rule.

    start, bin_size: [n] in the compute dtype; grid, size, first: [n] int64.
    """
    dt = start.dtype
    n = start.shape[0]
    p = torch.arange(m, device=start.device, dtype=dt)[None, :, None]
    i = torch.arange(gmax, device=start.device, dtype=dt)[None, None, :]
    s, b, g = start[:, None, None], bin_size[:, None, None], grid[:, None, None]
    sz = size[:, None, None]
    # roi_align's order: start + p * bin + (i + 0.5) * bin / grid
    pos = (s + p * b) + (i + 0.5) * b / g.to(dt)
    ok = (i < g) & (pos >= -1) & (pos <= sz)  # NaN compares false
    pos = torch.where(ok, pos, torch.zeros_like(pos)).clamp(min=0)
    low = pos.to(torch.int64)
    edge = low >= sz - 1
    low = torch.where(edge, sz - 1, low)
    high = torch.where(edge, low, low + 1)
    pos = torch.where(edge, low.to(dt), pos)
    w_high = torch.where(ok, pos - low.to(dt), torch.zeros_like(pos))
    w_low = torch.where(ok, 1.0 - (pos - low.to(dt)), torch.zeros_like(pos))
    f = first[:, None, None]
    # Invalid samples (weight 0) may name any row: clamp them into the window.
    lo = (low - f).clamp(0, length - 1).reshape(n, m, gmax)
    hi = (high - f).clamp(0, length - 1).reshape(n, m, gmax)
    a = torch.zeros(n, m, length, dtype=dt, device=start.device)
    a.scatter_add_(2, lo, w_low)
    a.scatter_add_(2, hi, w_high)
    return a


def _window(start, extent, size):
    """First mask row (or column) a proposal's samples can touch, and how many: a pixel of
    margin on each side covers the rounding of the sample positions."""
    hi_lim = (size - 1).to(start.dtype)
    zero = torch.zeros_like(start)
    first = torch.minimum(torch.maximum(torch.floor(start) - 1, zero), hi_lim)
    last = torch.minimum(torch.maximum(torch.floor(start + extent) + 2, zero), hi_lim)
    first, last = first.to(torch.int64), last.to(torch.int64)
    return first, (last - first + 1).clamp(min=1)


def mask_targets(
    gt_masks: Sequence[Tensor],
    boxes: Union[Tensor, Sequence[Tensor]],
    matched_idxs: Union[Tensor, Sequence[Tensor]],
    M: int,
    image_index: Optional[Tensor] = None,
) -> Tensor:
    """torchvision's ``project_masks_on_boxes`` of every image, concatenated; the arguments and
    result of :func:`maskrcnn_fast.ops.mask_targets`.

    Args:
        gt_masks (list of Tensor[G_i, H_i, W_i]): each image's masks (any dtype; read as numbers).
        boxes (list of Tensor[K_i, 4], or Tensor[K, 4] with ``image_index``): x1, y1, x2, y2.
        matched_idxs (list of Tensor[K_i], or Tensor[K]): each box's mask within its image.
        M (int): output size.
        image_index (Tensor[K], optional): each box's image when ``boxes`` is one tensor.

    Returns:
        Tensor[K, M, M] in boxes' dtype (computed in float64 for float64 boxes, else float32).
        A box with a non-finite coordinate gives zeros; an index out of range raises ValueError.
    """
    gt_masks = list(gt_masks)
    boxes, matched, image_index = _flatten(gt_masks, boxes, matched_idxs, image_index)
    m = int(M)
    if m <= 0:
        raise ValueError(f"M must be positive, got {M}")
    out_dtype = boxes.dtype
    cdt = out_dtype if out_dtype in (torch.float32, torch.float64) else torch.float32
    device = boxes.device
    k = boxes.shape[0]
    out = torch.zeros((k, m, m), dtype=cdt, device=device)
    if k == 0:
        return out.to(out_dtype)
    num_images = len(gt_masks)
    if num_images == 0 or bool(((image_index < 0) | (image_index >= num_images)).any()):
        raise ValueError(f"image_index must be in [0, {num_images}) (one entry of gt_masks per image)")
    shapes = torch.tensor([list(t.shape) for t in gt_masks], dtype=torch.int64, device=device).reshape(-1, 3)
    g, h, w = (shapes[image_index, j] for j in range(3))
    if bool(((matched < 0) | (matched >= g)).any()):
        raise ValueError("matched_idxs (matched_index) must be in [0, G_i) for the masks of each box's image")
    b = boxes.to(cdt)
    x1, y1, x2, y2 = b.unbind(1)
    roi_w = (x2 - x1).clamp(min=1.0)  # aligned=False: boxes under a pixel count as one
    roi_h = (y2 - y1).clamp(min=1.0)
    finite = torch.isfinite(b).all(1) & torch.isfinite(roi_w) & torch.isfinite(roi_h)
    bin_w, bin_h = roi_w / m, roi_h / m
    cap = float(_MAX_ADAPTIVE_GRID)
    gh = torch.where(finite, torch.ceil(bin_h), 0).clamp(0, cap).to(torch.int64)
    gw = torch.where(finite, torch.ceil(bin_w), 0).clamp(0, cap).to(torch.int64)
    usable = finite & (gh > 0) & (gw > 0) & (h > 0) & (w > 0)
    zero = torch.zeros_like(x1)
    x1, y1 = torch.where(usable, x1, zero), torch.where(usable, y1, zero)
    roi_w, roi_h = torch.where(usable, roi_w, zero + 1), torch.where(usable, roi_h, zero + 1)
    bin_w, bin_h = roi_w / m, roi_h / m
    row0, rows = _window(y1, roi_h, h.clamp(min=1))
    col0, cols = _window(x1, roi_w, w.clamp(min=1))
    count = (gh * gw).clamp(min=1).to(cdt)

    for i, planes in enumerate(gt_masks):
        mine = torch.nonzero(usable & (image_index == i)).flatten()
        cost = rows[mine] * cols[mine] + m * (gh + gw + rows + cols)[mine]
        cost, order = cost.sort(descending=True)
        mine, costs = mine[order], cost.tolist()
        start = 0
        while start < len(costs):
            n = max(1, _CHUNK_ELEMENTS // max(1, int(costs[start])))
            sel = mine[start:start + n]
            start += n
            ly, lx = int(rows[sel].max()), int(cols[sel].max())
            ay = _axis_matrix(y1[sel], bin_h[sel], gh[sel], h[sel], row0[sel], m, int(gh[sel].max()), ly)
            ax = _axis_matrix(x1[sel], bin_w[sel], gw[sel], w[sel], col0[sel], m, int(gw[sel].max()), lx)
            # Rows and columns past a proposal's window have zero weight: clamp them into the plane.
            r = torch.minimum(row0[sel, None] + torch.arange(ly, device=device), h[sel, None] - 1)
            c = torch.minimum(col0[sel, None] + torch.arange(lx, device=device), w[sel, None] - 1)
            crop = planes[matched[sel, None, None], r[:, :, None], c[:, None, :]].to(cdt)
            out[sel] = torch.bmm(torch.bmm(ay, crop), ax.transpose(1, 2)) / count[sel, None, None]
    return out.to(out_dtype)
